"""export_nnunet.py on nnU-Net results folders of the standard networks, without nnU-Net.

Each test writes a results folder as nnU-Net v2 leaves it (plans.json with the plan's
architecture, dataset.json, fold_X/checkpoint_final.pth) whose checkpoints hold the state dict
of a dynamic_network_architectures network: the tensors of model.PlainConvUNet or
ResidualEncoderUNet plus what nnU-Net's checkpoint has besides (the aliases
`*.all_modules.*` and `decoder.encoder.*`, the deep-supervision heads, DDP's `module.`).
The exported file must hold exactly the network's tensors, as a fold ensemble, and give its
logits; plans the card cannot state must be refused with their reason.
tools/mmunet/nnunet_families.py does the same with nnunetv2's own trainings.
"""

import json
import os
import shutil
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from mmunet import export, export_nnunet  # noqa: E402
from mmunet.model import PlainConvUNet, ResidualEncoderUNet  # noqa: E402

DNA = "dynamic_network_architectures.architectures.unet."
KERNELS = [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]


def arch_kwargs(family):
    kw = {"n_stages": 3, "features_per_stage": [4, 8, 8],
          "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": KERNELS,
          "strides": STRIDES, "n_conv_per_stage_decoder": [2, 1], "conv_bias": True,
          "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
          "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
          "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
          "nonlin_kwargs": {"inplace": True}}
    kw["n_conv_per_stage" if family == "PlainConvUNet" else "n_blocks_per_stage"] = [2, 2, 2] \
        if family == "PlainConvUNet" else [1, 2, 2]
    return kw


def plans(family, kw=None):
    conf = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [16, 48, 48], "spacing": [8.0, 4.0, 4.0],
            "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                          "force_separate_z": None},
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {"network_class_name": DNA + family,
                             "arch_kwargs": kw or arch_kwargs(family),
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op",
                                                     "nonlin"]}}
    return {"dataset_name": "Dataset991_Test", "plans_name": "nnUNetPlans",
            "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": conf},
            "foreground_intensity_properties_per_channel": {
                "0": {"mean": 100.0, "std": 40.0, "percentile_00_5": -80.0,
                      "percentile_99_5": 220.0}}}


def network(family, seed):
    torch.manual_seed(seed)
    kw = arch_kwargs(family)
    cls = PlainConvUNet if family == "PlainConvUNet" else ResidualEncoderUNet
    enc = kw["n_conv_per_stage"] if family == "PlainConvUNet" else kw["n_blocks_per_stage"]
    net = cls(1, 3, 3, kw["features_per_stage"], KERNELS, STRIDES, enc,
              kw["n_conv_per_stage_decoder"]).eval()
    with torch.no_grad():  # norms away from (1, 0), so that a swapped tensor shows
        for name, t in net.state_dict().items():
            if name.endswith("norm.weight") or name.endswith("norm.bias"):
                t.copy_(torch.randn_like(t) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    return net


def nnunet_state_dict(net):
    """What an nnU-Net checkpoint's network_weights hold for `net` (with DDP's prefix)."""
    sd = dict(net.state_dict())
    out = {}
    for k, v in sd.items():
        out["module." + k] = v
        # ConvDropoutNormReLU registers conv and norm a second time in all_modules
        for part, idx in ((".conv.", "0"), (".norm.", "1")):
            if part in k and (".convs." in k or ".stem." in k):
                head, tail = k.rsplit(part, 1)
                out[f"module.{head}.all_modules.{idx}.{tail}"] = v
        if k.startswith("encoder."):
            out["module.decoder." + k] = v           # the decoder keeps the encoder
    # the deep-supervision head of the coarser level (S = 3: seg_layers.0, on F_1 features)
    out["module.decoder.seg_layers.0.weight"] = torch.randn(3, net.features[1], 1, 1, 1)
    out["module.decoder.seg_layers.0.bias"] = torch.randn(3)
    return out


class ResultsFolder:
    def __init__(self, family, nets, plans_dict=None, trainer="nnUNetTrainer", config="3d_fullres"):
        self.dir = tempfile.mkdtemp(prefix="test-export-nnunet.")
        with open(os.path.join(self.dir, "plans.json"), "w") as f:
            json.dump(plans_dict or plans(family), f)
        with open(os.path.join(self.dir, "dataset.json"), "w") as f:
            json.dump({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1,
                                                                "spleen": 2},
                       "file_ending": ".nii.gz", "licence": "CC0-1.0"}, f)
        for i, net in enumerate(nets):
            os.makedirs(os.path.join(self.dir, f"fold_{i}"))
            torch.save({"network_weights": nnunet_state_dict(net), "trainer_name": trainer,
                        "init_args": {"configuration": config, "fold": i},
                        "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 2},
                       os.path.join(self.dir, f"fold_{i}", "checkpoint_final.pth"))

    def cleanup(self):
        shutil.rmtree(self.dir)


def quiet(*a, **k):
    pass


class TestExportFamilies(unittest.TestCase):
    def export(self, folder, **kw):
        out = os.path.join(folder.dir, "model.safetensors")
        return out, export_nnunet.export_results(folder.dir, out, log=quiet, **kw)

    def check_family(self, family):
        nets = [network(family, 1), network(family, 2)]
        folder = ResultsFolder(family, nets)
        try:
            out, (card, sha, _) = self.export(folder, postprocessing="none")
            a = card["architecture"]
            self.assertEqual(a["family"], family)
            self.assertEqual(a["ensemble"], ["fold_0", "fold_1"])
            self.assertEqual(a["kernel_sizes"], KERNELS)
            self.assertEqual(a["strides"], STRIDES)
            self.assertIs(a["conv_bias"], True)
            self.assertEqual(card["preprocessing"]["orientation"], "LPS")
            self.assertEqual(card["inference"]["patch_size"], [16, 48, 48])
            card2, tensors, sha2 = export.read_model(out)
            self.assertEqual(sha2, sha)
            want = export.ensemble_tensors([n.state_dict() for n in nets])
            self.assertEqual(set(tensors), set(want))
            for k, v in want.items():
                self.assertTrue(torch.equal(torch.from_numpy(tensors[k]), v), k)
            loaded, _, _ = export.load_network(out)
            x = torch.randn(1, 1, 16, 48, 48, generator=torch.Generator().manual_seed(3))
            with torch.no_grad():
                ref = (nets[0](x) + nets[1](x)) / 2
                self.assertLess(float((loaded(x) - ref).abs().max()), 1e-5)
        finally:
            folder.cleanup()

    def test_plain_conv_unet(self):
        self.check_family("PlainConvUNet")

    def test_residual_encoder_unet(self):
        self.check_family("ResidualEncoderUNet")

    def test_one_fold_and_dropout(self):
        kw = arch_kwargs("PlainConvUNet")
        kw["dropout_op"] = "torch.nn.modules.dropout.Dropout3d"   # the identity when predicting
        kw["dropout_op_kwargs"] = {"p": 0.2}
        folder = ResultsFolder("PlainConvUNet", [network("PlainConvUNet", 1)],
                               plans("PlainConvUNet", kw))
        try:
            _, (card, _, _) = self.export(folder, folds=[0], postprocessing="none")
            self.assertNotIn("ensemble", card["architecture"])
        finally:
            folder.cleanup()

    def refused(self, family, message, kw_edit=None, plans_edit=None, trainer="nnUNetTrainer",
                config="3d_fullres", extra_tensor=False):
        kw = arch_kwargs(family)
        kw.update(kw_edit or {})
        p = plans(family, kw)
        if plans_edit:
            plans_edit(p)
        net = network(family, 1)
        folder = ResultsFolder(family, [net], p, trainer, config)
        if extra_tensor:  # a trainer that builds another network than the plan's
            path = os.path.join(folder.dir, "fold_0", "checkpoint_final.pth")
            ck = torch.load(path)
            ck["network_weights"]["encoder.extra.weight"] = torch.zeros(2)
            torch.save(ck, path)
        try:
            with self.assertRaises(export_nnunet.ExportError) as cm:
                self.export(folder, folds=[0], postprocessing="none")
            self.assertIn(message, str(cm.exception))
        finally:
            folder.cleanup()

    def test_refusals(self):
        P, R = "PlainConvUNet", "ResidualEncoderUNet"

        def two_d(p):
            c = p["configurations"]["3d_fullres"]
            c["patch_size"] = [48, 48]

        def cascade(p):
            c = p["configurations"]
            c["3d_cascade_fullres"] = {"inherits_from": "3d_fullres",
                                       "previous_stage": "3d_lowres"}

        def other_class(p):
            p["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = \
                "some.package.UMambaBot"

        cases = [
            (P, "mmsegd's engine is 3D only", None, two_d, "3d_fullres"),
            (P, "cascade stage", None, cascade, "3d_cascade_fullres"),
            (P, "is not one mmsegd runs", None, other_class, "3d_fullres"),
            (P, "mmsegd's engine is 3D only",
             {"conv_op": "torch.nn.modules.conv.Conv2d"}, None, "3d_fullres"),
            (P, "only InstanceNorm3d",
             {"norm_op": "torch.nn.modules.batchnorm.BatchNorm3d"}, None, "3d_fullres"),
            (P, "only InstanceNorm3d",
             {"norm_op_kwargs": {"eps": 1e-5, "affine": False}}, None, "3d_fullres"),
            (P, "eps 1e-5 and slope 0.01 only",
             {"norm_op_kwargs": {"eps": 1e-3, "affine": True}}, None, "3d_fullres"),
            (P, "only LeakyReLU", {"nonlin": "torch.nn.ReLU"}, None, "3d_fullres"),
            (P, "eps 1e-5 and slope 0.01 only",
             {"nonlin_kwargs": {"negative_slope": 0.2}}, None, "3d_fullres"),
            (P, "only torch's dropouts", {"dropout_op": "my.SpatialDrop"}, None, "3d_fullres"),
            (P, "nonlin_first", {"nonlin_first": True}, None, "3d_fullres"),
            (P, "are not in the card", {"squeeze_excitation": True}, None, "3d_fullres"),
            (R, "only BasicBlockD",
             {"block": "dynamic_network_architectures.building_blocks.residual.BottleneckD",
              "bottleneck_channels": [2, 4, 4]}, None, "3d_fullres"),
            (R, "stem_channels", {"stem_channels": 6}, None, "3d_fullres"),
        ]
        for family, message, kw_edit, plans_edit, config in cases:
            with self.subTest(message=message, kw=kw_edit):
                self.refused(family, message, kw_edit, plans_edit, config=config)
        with self.subTest("another network's tensors"):
            self.refused(P, "does not fit the PlainConvUNet", extra_tensor=True)


if __name__ == "__main__":
    unittest.main()
