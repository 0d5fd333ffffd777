"""Generators for a secure broker deployment (`fiberwatch deploy ...`).

`spec` reads the site list; `pki` makes the CA and certificates; `passwd` the Mosquitto
password file and the clients' secrets; `acl` the per-gateway ACLs; `broker_conf` the
Mosquitto configs of the site brokers (with the site -> cloud bridge) and the cloud broker.
`layout` says where each generated file goes. Nothing here talks to the network.
"""
