"""The LPIPS network (AlexNet backbone) shared by the VAE's perceptual loss and the metrics.

Zhang, Isola, Efros, Shechtman & Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018, via the ``lpips`` package (v0.1, AlexNet backbone, the package's
own linear heads). The backbone weights are read from a local file (torchvision's
``alexnet-owt-7be5be79.pth``; :mod:`multibeta.models.pretrained` finds or fetches it).
"""

from __future__ import annotations

import logging
import os
import warnings

import torch

from multibeta.models.pretrained import WeightsError, resolve_weights
from multibeta.utils.io import file_sha256

logger = logging.getLogger(__name__)

#: lpips package options: version of the linear heads and backbone.
LPIPS_VERSION = "0.1"
LPIPS_NET = "alex"
#: Which torchvision AlexNet ``features`` modules make up each lpips slice (lpips.pretrained_networks.alexnet).
_ALEX_SLICES = {1: range(0, 2), 2: range(2, 5), 3: range(5, 8), 4: range(8, 10), 5: range(10, 12)}


def load_lpips(
    weights_path: str | os.PathLike | None,
    device: torch.device | str = "cpu",
    *,
    timeout_s: float = 60.0,
    allow_download: bool = True,
    config_key: str = "metrics.lpips_weights",
) -> torch.nn.Module:
    """An ``lpips.LPIPS(net="alex")`` model (frozen, eval mode) whose AlexNet backbone is read
    from a local file. Used by the reconstruction metric and by the VAE's LPIPS loss.

    Args:
        weights_path: torchvision's ``alexnet-owt-7be5be79.pth`` (or any file with its
            ``features.*`` entries); None uses torch.hub's cached copy (downloaded when missing
            and allowed).
        device: where to put the model.
        timeout_s, allow_download: see :func:`multibeta.models.pretrained.resolve_weights`.
        config_key: the config key named in errors (``metrics.lpips_weights``,
            ``vae.lpips.weights_path``).

    Raises:
        WeightsError: the backbone file is missing (naming ``config_key``) or is not an AlexNet
            state dict.
    """
    import lpips  # deferred: importing lpips pulls in torchvision models

    path = resolve_weights("lpips_alexnet", weights_path, timeout_s=timeout_s,
                           allow_download=allow_download, config_key=config_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of `pretrained=`
        model = lpips.LPIPS(net=LPIPS_NET, version=LPIPS_VERSION, pnet_rand=True, verbose=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for k, modules in _ALEX_SLICES.items():
            sl = getattr(model.net, f"slice{k}")
            for x in modules:
                sub = {n.split(".", 2)[2]: v for n, v in state.items() if n.startswith(f"features.{x}.")}
                sl._modules[str(x)].load_state_dict(sub, strict=True)
    except Exception as exc:  # unreadable file, wrong keys or shapes
        raise WeightsError(
            f"{path} ({config_key}) is not torchvision's AlexNet IMAGENET1K_V1 state dict "
            f"({type(exc).__name__}: {exc}). Rerun rule fetch_weights or fix the path."
        ) from exc
    model.eval().requires_grad_(False)
    model.weights_sha256 = file_sha256(path)  # recorded with results
    logger.info("LPIPS: AlexNet backbone loaded from %s", path)
    return model.to(device)
