"""federation: model training, int8 conversion, packaging, registry and evaluation.

The model lifecycle API (what the Flower apps, the cloud API and the CLI code against)
=====================================================================================

Feature rows are ``(N, D)`` float32 rows from `edge_agent.features.FeatureExtractor`
(DAS 24, DTS 5, raw W). Scores: high = anomalous; a normal row scores about 1.

``federation.model.task`` -- torch, no module-level state (Flower's ``task.py``)::

    build_model(dim, *, arch="ae-32-8", seed=0, **hyper) -> AutoEncoder
    get_weights(model) -> list[np.ndarray]           # state-dict order: params, then buffers
    set_weights(model, weights) -> None
    fit(model, rows, *, epochs, lr, batch_size, proximal_mu=0.0, global_weights=None,
        seed=0, progress=None) -> {"loss": float, "n": int}
    evaluate(model, rows) -> {"loss", "n", "score_mean", "score_p99"}
    score_rows(model, rows) -> np.ndarray[float32]   # float reference of the int8 score
    feature_stats(rows) -> {"count", "mean", "m2", "min", "max"}   # per feature, JSON-able
    combine_stats([stats, ...]) -> stats             # exact merge across clients
    stats_mean_std(stats) -> (mean, std)
    set_normalization(model, mean, std) -> None      # buffers; `fit` never changes them
    error_stats(model, rows) -> {"count", "sq_sum"}  # per-feature residual, mergeable
    error_scale_from_stats([error_stats, ...]) -> np.ndarray
    error_scale(model, rows) -> np.ndarray           # = error_scale_from_stats([error_stats])
    set_error_scale(model, scale) -> None
    prepare_and_fit(rows, *, arch, epochs, lr, batch_size, seed) -> (model, fit summary)
    # what the thin Flower apps call (`federation.flower.client_app`,
    # `federation.flower.server_app`):
    load_data(path, *, max_rows, min_rows) -> (train rows, held-out rows)
    local_update(model, rows, held, *, epochs, lr, ...) -> LocalUpdate(delta, fitted, before)
    roc_auc(scores, labels); Evaluator(path, dim, arch).auc(arrays)
    error_scale_setter(dim, arch) -> (arrays, scale) -> arrays

A federated round: the server sets normalisation from ``combine_stats`` of the clients'
``feature_stats``, FedAvg/FedProx over ``get_weights``, and after the last round the error
scale from ``error_scale_from_stats`` of the clients' ``error_stats``.

``federation.model.convert``::

    to_tflite(model, rows=None, *, stats=None, n_synth=50000, batch=1024, seed=0,
              progress=None) -> Converted(tflite, input_quant, output_quant, ...)
    synth_rows(stats, n, *, seed) -> rows            # calibration without data

``federation.registry.package`` (format: `edge_agent.package`)::

    package_model(model, spec, *, rows=None, stats=None, threshold_quantiles=None,
                  private_key=None, name, version=None, parent=None, training=None,
                  evaluation=None, progress=None) -> (package_bytes, report)
    build_package(*, tflite, spec, mean, std, error_scale, input_quant, output_quant,
                  threshold, ...) -> bytes
    sign_package(package_bytes, private_key) -> bytes
    score_histogram(scores) -> list[int]; quantiles_from_histograms([hist, ...]) -> dict

``federation.registry.keys``: ``generate() -> (private_pem, public_pem)``, ``save_pair(priv_path,
pub_path)``, ``load_private(path_or_pem)``, ``load_public(path_or_pem) -> bytes``.

Edge side (no torch): ``edge_agent.package.read_package(data, public_key, *,
feature_spec_hash=None) -> ModelPackage`` raising ``PackageError(reason)``, and
``edge_agent.inference.LiteRTDetector(pkg, num_threads=1)``.

``federation.registry.store.Registry(root, *, public_key=None, allow_unsigned=False)``: ``add``,
``list``, ``get``, ``package_bytes``, ``verified_package``, ``promote`` (canary/production only
after the stored package verifies), ``rollback``, ``republish`` (old weights, new version,
higher serial), ``production``, ``history``, ``set_metrics``. Trust fields of a package
(``serial``, ``targets``, ``not_after``): ``federation.registry.package.trust_fields``; the
gateway's policy: ``edge_agent.trust``.

``federation.model.train``: ``sim_training_rows(...) -> (rows, spec, source)``, ``train(rows, *,
arch, epochs, lr, batch_size, seed) -> (model, summary)``, ``save_checkpoint`` /
``load_checkpoint`` (state dict + spec + training rows or their stats).

``federation.model.datasets``: ``simulate(SimConfig, seed, stream) -> FeatureSet``,
``from_frames(frames, spec)``, ``read_recording(path)``, ``csv_features(path)`` -- rows
computed by the gateway's own pipeline; ``FeatureSet.normal_rows()``, ``.truth()``;
``EvalPlan``, ``eval_run(plan, family, seed)`` for the scenario families.

``federation.model.evaluate``: ``run_evaluation(pkg, *, families, peers, quick, ...) -> dict``
(``evaluate_runs``: the same and the raw runs, for the callers' plots) (event-level
precision/recall/F1, false alarms per 1,000 channel-hours, delay,
localisation, row AUC; every detector through `edge_agent.offline.OfflineScorer`),
``table(result)``; ``federation.model.peers``: ``build("iforest"|"hst"|"robust_z", rows, spec)``.

Offline scoring (edge side): ``edge_agent.offline.OfflineScorer(detector, stream_config,
*, spec=None, thresholds=None, events=None, on_window=None)`` with ``feed(frame)``,
``run(frames) -> events``, ``fork(on_window)``; ``csv_frames``, ``read_csv``,
``stream_config_for(spec, channels=...)``.
"""
