"""Metrics: one module per metric, each with a public ``compute_<name>(...) -> dict[str, float]``.

- Disentanglement of a code [N, D] against ground-truth factors [N, F] (as
  google-research/disentanglement_lib): :mod:`.mig` (``compute_mig``), :mod:`.dci`
  (``compute_dci``), :mod:`.factorvae` (``compute_factorvae``), :mod:`.sap`
  (``compute_sap``); against binary attributes [N, A]: :mod:`.tad` (``compute_tad``).
  Shared primitives in :mod:`.utils`; all of them for one code in one call:
  :mod:`.disentanglement` (``compute_disentanglement``).
- Generation: :mod:`.fidelity` (``compute_fidelity``: FID/KID via torch-fidelity in the
  Inception or the :mod:`.factor_classifier` feature space, cached reference features).
- Reconstruction: :mod:`.reconstruction` (``compute_reconstruction``: MSE, PSNR, LPIPS).
- Pretrained weights: :mod:`multibeta.models.pretrained` (``fetch_weights``, ``resolve_weights``).
- Image inputs (arrays, tensors, ``ImageDataset``): :mod:`.images`.
- Options: :mod:`.config` (``MetricsConfig.from_section``).

Submodules are imported on use (torch-fidelity and lpips are only loaded by the metrics
that need them).
"""
