"""Tests of the reference network, the model file and the fixtures (mmunet.md section 7).

    /usr/bin/python3 -m unittest discover -s tools/mmunet -p 'test_*.py' -v
"""

import filecmp
import itertools
import json
import math
import os
import sys
import tempfile
import unittest

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from mmunet import export, fixtures  # noqa: E402
from mmunet.mamba import (Mamba, selective_scan, selective_scan_chunked,  # noqa: E402
                          selective_scan_sequential)
from mmunet.model import (MMUNet, PlainConvUNet, ResidualEncoderUNet,  # noqa: E402
                          canonical_nnunet_state_dict, init_reference_weights,
                          network_from_architecture)
from mmunet.pipeline import Orientation, gaussian_map, tile_starts  # noqa: E402

FIXTURES = os.path.join(HERE, "..", "..", "tests", "fixtures", "mmunet")


def mamba_by_the_equations(m, U):
    """mmunet.md 3.1 written out loop by loop, independently of mamba.py (fp64, one sample).

    U: (L, C) numpy.  Every sum is an explicit loop over its index."""
    W_in = m.in_proj.weight.detach().double().numpy()
    w_conv = m.conv1d.weight.detach().double().numpy()
    b_conv = m.conv1d.bias.detach().double().numpy()
    W_x = m.x_proj.weight.detach().double().numpy()
    W_dt = m.dt_proj.weight.detach().double().numpy()
    b_dt = m.dt_proj.bias.detach().double().numpy()
    A = -np.exp(m.A_log.detach().double().numpy())
    D = m.D.detach().double().numpy()
    W_out = m.out_proj.weight.detach().double().numpy()
    L, C = U.shape
    E, N, R, K = m.d_inner, m.d_state, m.dt_rank, m.d_conv

    def silu(v):
        return v / (1.0 + math.exp(-v))

    def softplus(v):
        return v if v > 20 else math.log1p(math.exp(v))

    XZ = np.zeros((L, 2 * E))
    for t in range(L):
        for o in range(2 * E):
            XZ[t, o] = sum(U[t, c] * W_in[o, c] for c in range(C))
    X, Z = XZ[:, :E], XZ[:, E:]
    Xc = np.zeros((L, E))
    for t in range(L):
        for e in range(E):
            acc = b_conv[e]
            for k in range(K):
                tau = t - K + 1 + k
                if tau >= 0:
                    acc += w_conv[e, 0, k] * X[tau, e]
            Xc[t, e] = silu(acc)
    P = np.zeros((L, R + 2 * N))
    for t in range(L):
        for o in range(R + 2 * N):
            P[t, o] = sum(Xc[t, e] * W_x[o, e] for e in range(E))
    delta, Bm, Cm = P[:, :R], P[:, R:R + N], P[:, R + N:]
    Dl = np.zeros((L, E))
    for t in range(L):
        for e in range(E):
            Dl[t, e] = softplus(sum(delta[t, r] * W_dt[e, r] for r in range(R)) + b_dt[e])
    h = np.zeros((E, N))
    y = np.zeros((L, E))
    for t in range(L):
        for e in range(E):
            acc = 0.0
            for n in range(N):
                h[e, n] = math.exp(Dl[t, e] * A[e, n]) * h[e, n] + Dl[t, e] * Bm[t, n] * Xc[t, e]
                acc += Cm[t, n] * h[e, n]
            y[t, e] = (acc + D[e] * Xc[t, e]) * silu(Z[t, e])
    out = np.zeros((L, C))
    for t in range(L):
        for c in range(C):
            out[t, c] = sum(y[t, e] * W_out[c, e] for e in range(E))
    return out


class TestMamba(unittest.TestCase):
    def test_against_equations(self):
        torch.manual_seed(1)
        m = Mamba(4, d_state=3, d_conv=4, expand=2).double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
        for L in (1, 2, 7):
            U = torch.randn(1, L, 4, dtype=torch.float64)
            want = mamba_by_the_equations(m, U[0].numpy())
            for chunked in (False, True):
                m.chunked = chunked
                with torch.no_grad():
                    got = m(U)[0].numpy()
                err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
                self.assertLess(err, 1e-5, f"L={L} chunked={chunked}: {err}")

    def test_sequential_and_chunked_scans_agree(self):
        g = torch.Generator().manual_seed(2)
        for L, chunk in ((1, None), (3, None), (5, 2), (1000, None), (1000, 7), (4096, 64)):
            E, N = 6, 5
            x = torch.randn(2, L, E, generator=g, dtype=torch.float64)
            dt = F.softplus(torch.randn(2, L, E, generator=g, dtype=torch.float64) - 2)
            A = -torch.rand(E, N, generator=g, dtype=torch.float64) * 8
            B = torch.randn(2, L, N, generator=g, dtype=torch.float64)
            C = torch.randn(2, L, N, generator=g, dtype=torch.float64)
            D = torch.randn(E, generator=g, dtype=torch.float64)
            a = selective_scan_sequential(x, dt, A, B, C, D)
            b = selective_scan_chunked(x, dt, A, B, C, D, chunk)
            err = (a - b).abs().max().item() / max(1.0, a.abs().max().item())
            self.assertLess(err, 1e-10, f"L={L} chunk={chunk}")

    def test_grouped_scan_equals_the_whole_scan(self):
        # Groups of 128 tokens: the default chunk of a group (12 tokens) does not divide 128,
        # so padded chunks sit at every group boundary, and the last group is shorter (104).
        g = torch.Generator().manual_seed(3)
        L, E, N = 1000, 6, 5
        for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
            x = torch.randn(2, L, E, generator=g, dtype=torch.float64)
            dt = F.softplus(torch.randn(2, L, E, generator=g, dtype=torch.float64) - 2)
            A = -torch.rand(E, N, generator=g, dtype=torch.float64) * 8
            B = torch.randn(2, L, N, generator=g, dtype=torch.float64)
            C = torch.randn(2, L, N, generator=g, dtype=torch.float64)
            D = torch.randn(E, generator=g, dtype=torch.float64)
            args = [t.to(dtype) for t in (x, dt, A, B, C, D)]
            whole = selective_scan(*args)
            self.assertTrue(torch.equal(whole, selective_scan(*args, group=L)))
            self.assertTrue(torch.equal(whole, selective_scan(*args, group=None)))
            for group in (128, 100, 999):
                got = selective_scan(*args, group=group)
                err = (got - whole).abs().max().item() / max(1.0, whole.abs().max().item())
                self.assertLess(err, tol, f"{dtype} group={group}: {err}")
            # The state handed over is the sequential scan's state after the prefix.
            y1, h = selective_scan_chunked(*[a[:, :300] if a.dim() == 3 else a for a in args],
                                           chunk=7, return_state=True)
            y2 = selective_scan_chunked(*[a[:, 300:] if a.dim() == 3 else a for a in args],
                                        chunk=7, h0=h)
            seq = selective_scan_sequential(*args)
            err = (torch.cat([y1, y2], 1) - seq).abs().max().item() / seq.abs().max().item()
            self.assertLess(err, tol, f"{dtype} h0/return_state: {err}")

    def test_scan_group_on_the_network(self):
        m = MMUNet(**fixtures.TINY)
        init_reference_weights(m, 6)
        m.eval()
        x = torch.randn(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            want = m(x)
            m.set_scan_group(100)        # stage 0 has 2048 tokens, stage 1 512, stage 2 64
            got = m(x)
            m.set_scan_group(None)
            again = m(x)
        self.assertTrue(torch.equal(want, again))
        err = (got - want).abs().max().item() / max(1.0, want.abs().max().item())
        self.assertLess(err, 1e-5)

    def test_parameter_count(self):
        # One Mamba: 2EC + E(K+1) + E(R+2N) + ER + E + EN + E + CE (mmunet.md 2.7).
        for C in (4, 32, 320):
            m = Mamba(C)
            E, N, K, R = 2 * C, 16, 4, math.ceil(C / 16)
            want = 2 * E * C + E * (K + 1) + E * (R + 2 * N) + E * R + E + E * N + E + C * E
            self.assertEqual(sum(p.numel() for p in m.parameters()), want)


class TestNetwork(unittest.TestCase):
    def test_names_and_shapes_follow_the_card(self):
        for variant, mixer in fixtures.VARIANTS.items():
            m = MMUNet(**fixtures.TINY, mixer=mixer)
            got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
            self.assertEqual(got, export.expected_tensors(m.architecture()), variant)
            ds = MMUNet(**fixtures.TINY, mixer=mixer, deep_supervision=True)
            extra = set(ds.state_dict()) - set(got)
            self.assertTrue(extra and all(export.glob_match("decoder.ds_heads.*", k)
                                          for k in extra))

    def test_deep_supervision_outputs(self):
        m = MMUNet(**fixtures.TINY, deep_supervision=True).eval()
        with torch.no_grad():
            outs = m(torch.randn(1, 1, 8, 16, 16))
        self.assertEqual([tuple(o.shape[2:]) for o in outs], [(8, 16, 16), (8, 8, 8)])

    def test_nnunet_constructor_arguments(self):
        m = MMUNet(input_channels=1, num_classes=4, n_stages=3, features_per_stage=[4, 8, 16],
                   conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 3,
                   strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[2, 2, 2],
                   n_conv_per_stage_decoder=[2, 2], conv_bias=True,
                   norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                   dropout_op=None, dropout_op_kwargs=None, nonlin=torch.nn.LeakyReLU,
                   nonlin_kwargs={"inplace": True}, deep_supervision=False)
        self.assertEqual(m.architecture()["n_blocks_encoder"], [2, 2, 1])
        with self.assertRaises(TypeError):
            MMUNet(1, 2, 2, [4, 8], [[3, 3, 3]] * 2, [[1, 1, 1], [2, 2, 2]], attention=True)


class TestModelFile(unittest.TestCase):
    def test_round_trip(self):
        m = MMUNet(**fixtures.TINY, mixer={"biscan": "vim_v2"})
        init_reference_weights(m, 5)
        card = fixtures.tiny_card(m, "rt")
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "m.safetensors")
            sha = export.write_model(p, m.state_dict(), card)
            with open(p, "rb") as f:
                raw = f.read()
            nh = int.from_bytes(raw[:8], "little")
            self.assertEqual((8 + nh) % 64, 0, "data starts at a multiple of 64")
            card2, tensors, sha2 = export.read_model(p)
            self.assertEqual(sha, sha2)
            self.assertEqual(card, card2)
            for k, v in m.state_dict().items():
                self.assertTrue(np.array_equal(v.numpy(), tensors[k]), k)
            net, _, _ = export.load_network(p)
            x = torch.randn(1, 1, 8, 16, 16)
            with torch.no_grad():
                self.assertTrue(torch.equal(net(x), m.eval()(x)))

    def test_malformed_files_are_refused(self):
        with open(os.path.join(FIXTURES, "malformed", "manifest.json")) as f:
            cases = json.load(f)
        self.assertGreaterEqual(len(cases), 12)
        export.read_model(os.path.join(FIXTURES, "micro.safetensors"))   # the bases are valid
        export.read_model(os.path.join(FIXTURES, "micro-plain.safetensors"))
        for name, fragment in sorted(cases.items()):
            path = os.path.join(FIXTURES, "malformed", name + ".safetensors")
            with self.assertRaises(export.ModelError, msg=name) as cm:
                export.read_model(path)
            self.assertIn(fragment, str(cm.exception), name)
            self.assertIn(path, str(cm.exception), f"{name}: the message names the file")

    def test_card_rules(self):
        m = MMUNet(**fixtures.TINY)
        card = fixtures.tiny_card(m, "rules")
        bad = [
            (lambda c: c["preprocessing"].update(transpose_backward=[1, 0, 2],
                                                 transpose_forward=[0, 2, 1]), "inverse"),
            (lambda c: c["architecture"]["mixer"].update(gate="x"), "unknown key 'gate'"),
            (lambda c: c["labels"].pop(), "ids must be 1..2"),
            (lambda c: c["inference"].update(tile_step=0), "tile_step"),
            (lambda c: c["preprocessing"]["normalization"].update(std=0), "std"),
            (lambda c: c["architecture"]["kernel_sizes"][1].__setitem__(0, 2), "odd"),
        ]
        for edit, fragment in bad:
            c = json.loads(json.dumps(card))
            edit(c)
            with self.assertRaises(export.ModelError) as cm:
                export.validate_card(c)
            self.assertIn(fragment, str(cm.exception))

    def test_schema_accepts_the_cards(self):
        try:
            import jsonschema
        except ImportError:
            self.skipTest("python3-jsonschema is not installed")
        with open(os.path.join(HERE, "model-card.schema.json")) as f:
            schema = json.load(f)
        paths = [os.path.join(FIXTURES, n) for n in sorted(os.listdir(FIXTURES))
                 if n.endswith(".safetensors") and ".golden" not in n and ".big" not in n
                 and n != "mamba-ops.safetensors"]
        demo = os.path.join(HERE, "..", "..", "models", "demo.safetensors")
        if os.path.exists(demo):
            paths.append(demo)
        for p in paths:
            card, _, _ = export.read_model(p)
            jsonschema.validate(card, schema)
        c = json.loads(json.dumps(card))
        c["architecture"]["mixer"]["biscan"] = "diagonal"
        with self.assertRaises(jsonschema.ValidationError):
            jsonschema.validate(c, schema)


class TestFixtures(unittest.TestCase):
    def test_regeneration_is_byte_identical(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(fixtures.main(["fixtures.py", d]), 0)
            cmp = filecmp.dircmp(d, FIXTURES)
            names = [n for n in os.listdir(d) if n != "malformed"]
            _, mismatch, errors = filecmp.cmpfiles(d, FIXTURES, names, shallow=False)
            self.assertEqual((mismatch, errors), ([], []))
            mal = sorted(os.listdir(os.path.join(d, "malformed")))
            _, mismatch, errors = filecmp.cmpfiles(os.path.join(d, "malformed"),
                                                   os.path.join(FIXTURES, "malformed"), mal,
                                                   shallow=False)
            self.assertEqual((mismatch, errors), ([], []))
            self.assertFalse(cmp.left_only or cmp.right_only,
                             f"{cmp.left_only} {cmp.right_only}")

    def test_goldens_reproduce_in_fp64(self):
        with open(os.path.join(FIXTURES, "tiny-vim_v2.golden.safetensors"), "rb") as f:
            meta, entries, start = export.parse_safetensors(f.read())
        net, _, _ = export.load_network(os.path.join(FIXTURES, "tiny-vim_v2.safetensors"),
                                        torch.float64)
        with open(os.path.join(FIXTURES, "tiny-vim_v2.golden.safetensors"), "rb") as f:
            raw = f.read()
        def tensor(name):
            dt, shape, b, e = entries[name]
            return np.frombuffer(raw[start + b:start + e], "<f4").reshape(shape)
        x = torch.from_numpy(tensor("input").astype(np.float64))[None]
        with torch.no_grad():
            logits = net(x)[0].numpy()
        want = tensor("logits")
        self.assertLess(np.abs(logits - want).max() / max(1, np.abs(want).max()), 1e-6)
        self.assertIn(meta["mamba_block"] + ".delta", entries)


class TestExportNnunet(unittest.TestCase):
    """export_nnunet.py on a results folder made here: two folds of one plan, trained from
    different starts (two seeds), without nnU-Net installed."""

    ARCH = {"n_stages": 2, "features_per_stage": [2, 4],
            "kernel_sizes": [[1, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [1, 2, 2]],
            "mixer": {"mamba_stages": [1], "d_state": 4, "expand": 1}}

    def results(self, d):
        from mmunet.nnunet_trainer import build_mmunet
        plans = {"dataset_name": "Dataset999_Folds", "plans_name": "nnUNetPlans",
                 "image_reader_writer": "SimpleITKIO",
                 "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
                 "foreground_intensity_properties_per_channel": {"0": {
                     "percentile_00_5": -1000.0, "percentile_99_5": 1000.0, "mean": 50.0,
                     "std": 300.0}},
                 "configurations": {"3d_fullres": {
                     "architecture": {"arch_kwargs": self.ARCH}, "spacing": [3.0, 1.5, 1.5],
                     "patch_size": [4, 8, 8], "normalization_schemes": ["CTNormalization"]}}}
        dataset = {"channel_names": {"0": "CT"},
                   "labels": {"background": 0, "liver": 1, "spleen": 2}}
        with open(os.path.join(d, "plans.json"), "w") as f:
            json.dump(plans, f)
        with open(os.path.join(d, "dataset.json"), "w") as f:
            json.dump(dataset, f)
        nets = []
        for fold in (0, 1):
            torch.manual_seed(100 + fold)
            net = build_mmunet(self.ARCH, 1, 3, enable_deep_supervision=True)
            os.makedirs(os.path.join(d, f"fold_{fold}"))
            torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainerMMUNet",
                        "init_args": {"configuration": "3d_fullres"}, "current_epoch": 2,
                        "inference_allowed_mirroring_axes": (0, 1, 2)},
                       os.path.join(d, f"fold_{fold}", "checkpoint_final.pth"))
            net.deep_supervision = False
            nets.append(net.eval())
        return nets

    def test_folds_become_an_ensemble_of_logits(self):
        from mmunet import export_nnunet
        with tempfile.TemporaryDirectory() as d:
            nets = self.results(d)
            out = os.path.join(d, "model.safetensors")
            card, _, _ = export_nnunet.export_results(d, out, log=lambda *a: None)
            self.assertEqual(card["architecture"]["ensemble"], ["fold_0", "fold_1"])
            loaded, card2, _ = export.load_network(out)
            self.assertEqual(card2, card)
            x = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
            with torch.no_grad():
                want = (nets[0](x) + nets[1](x)) / 2
                got = loaded(x)
                # what averaging the weights of the two folds would give
                avg = export_nnunet.build_mmunet(self.ARCH, 1, 3, initialize=False).eval()
                sd0, sd1 = nets[0].state_dict(), nets[1].state_dict()
                avg.load_state_dict({k: (sd0[k] + sd1[k]) / 2 for k in sd0}, strict=False)
                averaged = avg(x)
            self.assertLess((got - want).abs().max().item(), 1e-5)
            self.assertGreater((averaged - want).abs().max().item(), 1e-2)

            # nnU-Net's postprocessing of these folds, pickled as nnU-Net pickles it (its
            # function by reference): carried into the card, and applied by postprocess()
            import pickle
            import types
            mods = ["nnunetv2", "nnunetv2.postprocessing",
                    "nnunetv2.postprocessing.remove_connected_components"]
            for m in mods:
                sys.modules[m] = types.ModuleType(m)
            fn = lambda seg, labels_or_regions, background_label=0: seg  # noqa: E731
            fn.__module__, fn.__qualname__ = mods[-1], export_nnunet.PP_FN
            fn.__name__ = export_nnunet.PP_FN
            setattr(sys.modules[mods[-1]], export_nnunet.PP_FN, fn)
            cv = os.path.join(d, "crossval_results_folds_0_1")
            os.makedirs(cv)
            try:
                with open(os.path.join(cv, "postprocessing.pkl"), "wb") as f:
                    pickle.dump(([fn, fn], [{"labels_or_regions": [1, 2]},
                                            {"labels_or_regions": (2,)}]), f)
            finally:
                for m in mods:
                    del sys.modules[m]
            card, _, _ = export_nnunet.export_results(d, out, log=lambda *a: None)
            self.assertEqual(card["postprocessing"], [{"keep_largest_component": [1, 2]},
                                                      {"keep_largest_component": [2]}])
            card, _, _ = export_nnunet.export_results(d, out, postprocessing="none",
                                                      log=lambda *a: None)
            self.assertNotIn("postprocessing", card)
            with open(os.path.join(cv, "bad.pkl"), "wb") as f:
                pickle.dump(([os.system], [{}]), f)
            with self.assertRaises(export_nnunet.ExportError):
                export_nnunet.read_postprocessing(os.path.join(cv, "bad.pkl"))

            one = os.path.join(d, "fold1.safetensors")
            card, _, _ = export_nnunet.export_results(d, one, folds=[1], log=lambda *a: None)
            self.assertNotIn("ensemble", card["architecture"])
            net1, _, _ = export.load_network(one)
            with torch.no_grad():
                self.assertLess((net1(x) - nets[1](x)).abs().max().item(), 1e-6)


def read_golden(name):
    """{name: float64 array} of tests/fixtures/mmunet/<name>."""
    with open(os.path.join(FIXTURES, name), "rb") as f:
        raw = f.read()
    _, entries, start = export.parse_safetensors(raw)
    return {k: np.frombuffer(raw[start + b:start + e], "<f4").reshape(shape).astype(np.float64)
            for k, (dt, shape, b, e) in entries.items()}


class TestNnunetFamilies(unittest.TestCase):
    """PlainConvUNet and ResidualEncoderUNet (README, "nnU-Net's standard networks")."""

    def networks(self):
        for variant in fixtures.NNUNET_VARIANTS:
            yield variant, fixtures.nnunet_network(variant)
        # a stage without stride that changes the channels (skip.0), 2 inputs, kernels of 5
        yield "skip0", ResidualEncoderUNet(2, 3, 4, [4, 6, 8, 8],
                                           [[1, 3, 3], [3, 5, 3], [3, 3, 3], [1, 3, 3]],
                                           [[1, 1, 1], [1, 1, 1], [2, 2, 2], [1, 2, 2]],
                                           [2, 1, 2, 1], [1, 2, 1], conv_bias=False)
        yield "plain4", PlainConvUNet(2, 3, 4, [3, 5, 6, 6], [[3, 3, 3]] * 4,
                                      [[1, 1, 1], [2, 2, 1], [1, 2, 2], [2, 1, 1]],
                                      [1, 3, 1, 2], [2, 1, 3], conv_bias=False)

    def test_names_and_shapes_follow_the_card(self):
        for variant, m in self.networks():
            arch = m.architecture()
            got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
            self.assertEqual(got, export.expected_tensors(arch), variant)
            self.assertEqual(arch["ignorable_tensors"], [])
            self.assertEqual(network_from_architecture(arch).architecture(), arch, variant)
            keys = set(export.FAMILY_KEYS[arch["family"]])
            self.assertEqual(set(arch), keys, variant)
        names = set(fixtures.nnunet_network("resenc").state_dict())
        # stage 1 pools and changes the channels: skip.1; stage 2 only pools: no tensor
        self.assertIn("encoder.stages.1.blocks.0.skip.1.conv.weight", names)
        self.assertNotIn("encoder.stages.1.blocks.0.skip.1.conv.bias", names)
        self.assertFalse([n for n in names if n.startswith("encoder.stages.2.blocks.0.skip")])
        self.assertNotIn("encoder.stem.convs.0.conv.bias",
                         fixtures.nnunet_network("resenc-nobias").state_dict())
        self.assertIn("decoder.seg_layers.1.bias",
                      fixtures.nnunet_network("resenc-nobias").state_dict())

    def test_card_round_trip(self):
        for variant, m in self.networks():
            init_reference_weights(m, 9)
            m.eval()
            card = fixtures.tiny_card(m, variant)
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "m.safetensors")
                export.write_model(p, m.state_dict(), card)
                net, card2, _ = export.load_network(p)
            self.assertEqual(card2, card)
            self.assertIs(type(net), type(m))
            x = torch.randn(1, m.in_channels, 8, 16, 16,
                            generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                self.assertTrue(torch.equal(net(x), m(x)), variant)

    def test_card_rules(self):
        plain = fixtures.tiny_card(fixtures.nnunet_network("plain"), "rules")
        resenc = fixtures.tiny_card(fixtures.nnunet_network("resenc"), "rules")
        mmunet = fixtures.tiny_card(MMUNet(**fixtures.TINY), "rules")
        family = ("architecture.family: expected 'mmunet', 'PlainConvUNet' or "
                  "'ResidualEncoderUNet', found ")
        bad = [
            (plain, lambda a: a.update(family="UNet"), family + "'UNet'"),
            (plain, lambda a: a.update(family=["PlainConvUNet"]), family + "['PlainConvUNet']"),
            (plain, lambda a: a.pop("family"), family + "None"),
            (mmunet, lambda a: a.pop("family"), family + "None"),
            (plain, lambda a: a.update(mixer=mmunet["architecture"]["mixer"]),
             "architecture: unknown key 'mixer' (it could change the math)"),
            (plain, lambda a: a.update(decoder="residual_nearest"),
             "architecture: unknown key 'decoder'"),
            (plain, lambda a: a.update(stem_blocks=1), "architecture: unknown key 'stem_blocks'"),
            (plain, lambda a: a.update(n_blocks_per_stage=a.pop("n_conv_per_stage")),
             "architecture: unknown key 'n_blocks_per_stage'"),
            (resenc, lambda a: a.pop("n_blocks_per_stage"),
             "architecture: missing key 'n_blocks_per_stage'"),
            (plain, lambda a: a.pop("conv_bias"), "architecture: missing key 'conv_bias'"),
            (mmunet, lambda a: a.update(conv_bias=True), "architecture: unknown key 'conv_bias'"),
            (plain, lambda a: a.update(conv_bias=1),
             "architecture.conv_bias: must be true or false"),
            (resenc, lambda a: a.update(conv_bias="true"),
             "architecture.conv_bias: must be true or false"),
            (plain, lambda a: a.update(n_conv_per_stage=[2, 2]),
             "architecture.n_conv_per_stage: expected 3 integers, found [2, 2]"),
            (plain, lambda a: a.update(n_conv_per_stage=[2, 0, 2]),
             "architecture.n_conv_per_stage: values must lie in 1..None, found [2, 0, 2]"),
            (resenc, lambda a: a.update(n_blocks_per_stage=[1, 2, 2.0]),
             "architecture.n_blocks_per_stage: expected 3 integers, found [1, 2, 2.0]"),
            (resenc, lambda a: a.update(n_conv_per_stage_decoder=[1, 1, 1]),
             "architecture.n_conv_per_stage_decoder: expected 2 integers, found [1, 1, 1]"),
            (plain, lambda a: a.update(n_conv_per_stage_decoder=[0, 1]),
             "architecture.n_conv_per_stage_decoder: values must lie in 1..None, found [0, 1]"),
            (resenc, lambda a: a.update(n_stages=9),
             "architecture.n_stages: must be 2..8, found 9"),
            (resenc, lambda a: a["strides"].__setitem__(0, [1, 2, 2]),
             "architecture.strides[0]: must be [1, 1, 1], found [1, 2, 2]"),
            (plain, lambda a: a["kernel_sizes"][2].__setitem__(1, 4), "kernels must be odd"),
            (plain, lambda a: a["norm"].update(eps=1e-3), "architecture.norm: version 1 accepts"),
            (resenc, lambda a: a["nonlin"].update(negative_slope=0.1),
             "architecture.nonlin: version 1 accepts"),
            (plain, lambda a: a.update(ensemble=["fold_0"]), "architecture.ensemble: 2 to 16"),
        ]
        for card, edit, msg in bad:
            c = json.loads(json.dumps(card))
            edit(c["architecture"])
            with self.assertRaises(export.ModelError, msg=msg) as cm:
                export.validate_card(c)
            self.assertIn(msg, str(cm.exception))
        # outside `architecture` nothing changes: the patch follows the strides' product
        c = json.loads(json.dumps(plain))
        c["inference"]["patch_size"] = [8, 16, 10]
        with self.assertRaises(export.ModelError) as cm:
            export.validate_card(c)
        self.assertIn("inference.patch_size: axis 2 (10) is not divisible", str(cm.exception))
        for card in (plain, resenc):
            c = json.loads(json.dumps(card))
            c["architecture"]["conv_bias"] = False
            export.validate_card(c)

    def test_malformed_base_is_valid(self):
        card, tensors, _ = export.read_model(os.path.join(FIXTURES, "micro-plain.safetensors"))
        self.assertEqual(card["architecture"]["family"], "PlainConvUNet")
        with open(os.path.join(FIXTURES, "malformed", "manifest.json")) as f:
            cases = json.load(f)
        for name in ("family-unknown", "family-missing", "plain-mixer-key", "conv-bias-not-bool",
                     "plain-missing-transpconv", "plain-all-modules-alias",
                     "plain-decoder-encoder-alias", "plain-ds-head"):
            self.assertIn(name, cases)

    def test_goldens_reproduce_in_fp64(self):
        for variant in list(fixtures.NNUNET_VARIANTS) + ["plain-ensemble"]:
            gold = read_golden(f"tiny-{variant}.golden.safetensors")
            net, card, _ = export.load_network(
                os.path.join(FIXTURES, f"tiny-{variant}.safetensors"), torch.float64)
            self.assertEqual(tuple(gold["input"].shape), (1, 8, 16, 16))
            x = torch.from_numpy(gold["input"])[None]
            with torch.no_grad():
                logits = net(x)[0].numpy()
            want = gold["logits"]
            err = np.abs(logits - want).max() / max(1, np.abs(want).max())
            self.assertLess(err, 1e-6, variant)
            # not degenerate: the classes differ, and the voxels do
            self.assertGreater(want.std(axis=(1, 2, 3)).min(), 1e-2, variant)
            self.assertGreater(len(np.unique(want.argmax(0))), 1, variant)
            if "ensemble" in card["architecture"]:
                self.assertEqual(card["architecture"]["ensemble"], fixtures.ENSEMBLE_MEMBERS)
                self.assertIs(type(net.members[0]), PlainConvUNet)
                mean = (gold["logits.0"] + gold["logits.1"]) / 2
                self.assertLess(np.abs(mean - want).max(), 1e-6)
                self.assertGreater(np.abs(gold["logits.0"] - gold["logits.1"]).max(), 1e-2)
                with torch.no_grad():
                    for k, m in enumerate(net.members):
                        got = m(x)[0].numpy()
                        self.assertLess(np.abs(got - gold[f"logits.{k}"]).max(), 1e-5)

    def dna_like_state_dict(self, net):
        """What dynamic_network_architectures' state dict adds to ours, by its naming: the
        `all_modules` aliases of every CNR, the decoder's reference to the encoder and the
        deep-supervision heads."""
        sd = dict(net.state_dict())
        out = dict(sd)
        for k, v in sd.items():
            for part, idx in ((".conv.", 0), (".norm.", 1)):
                if part in k:
                    head, tail = k.rsplit(part, 1)
                    out[f"{head}.all_modules.{idx}.{tail}"] = v
        out.update({"decoder." + k: v for k, v in out.items() if k.startswith("encoder.")})
        S = net.n_stages
        for j in range(S - 2):
            out[f"decoder.seg_layers.{j}.weight"] = torch.zeros(net.num_classes,
                                                                net.features[S - 2 - j], 1, 1, 1)
            out[f"decoder.seg_layers.{j}.bias"] = torch.zeros(net.num_classes)
        return out

    def test_canonical_state_dict(self):
        for variant, m in self.networks():
            sd = self.dna_like_state_dict(m)
            self.assertGreater(len(sd), len(m.state_dict()))
            got = canonical_nnunet_state_dict(sd, m.architecture())
            self.assertEqual(set(got), set(m.state_dict()), variant)
            self.assertEqual(set(got), set(export.expected_tensors(m.architecture())))

    def test_against_dynamic_network_architectures(self):
        try:
            from dynamic_network_architectures.architectures import unet as dna
        except ImportError as e:
            reason = f"dynamic_network_architectures does not import here ({e})"
            print(f"SKIP test_against_dynamic_network_architectures: {reason}", file=sys.stderr)
            self.skipTest(reason)
        worst = 0.0
        for variant, m in self.networks():
            arch = m.architecture()
            key = export.ENCODER_COUNTS[arch["family"]]
            ref = getattr(dna, arch["family"])(
                input_channels=arch["in_channels"], n_stages=arch["n_stages"],
                features_per_stage=arch["features_per_stage"], conv_op=torch.nn.Conv3d,
                kernel_sizes=arch["kernel_sizes"], strides=arch["strides"],
                num_classes=arch["num_classes"], conv_bias=arch["conv_bias"],
                norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                dropout_op=None, dropout_op_kwargs=None, nonlin=torch.nn.LeakyReLU,
                nonlin_kwargs={"inplace": True}, deep_supervision=False,
                n_conv_per_stage_decoder=arch["n_conv_per_stage_decoder"], **{key: arch[key]})
            init_reference_weights(ref, 11)
            ref.eval()
            ours = network_from_architecture(arch).eval()
            ours.load_state_dict(canonical_nnunet_state_dict(ref.state_dict(), arch), strict=True)
            x = torch.randn(2, arch["in_channels"], 8, 16, 16,
                            generator=torch.Generator().manual_seed(12))
            with torch.no_grad():
                want = ref(x)
                got = ours(x)
            err = (got - want).abs().max().item()
            self.assertEqual(got.dtype, torch.float32)
            self.assertLess(err, 1e-4, variant)
            self.assertGreater(want.std().item(), 1e-2, variant)
            worst = max(worst, err)
        print(f"dynamic_network_architectures: logits agree, max abs diff {worst:.3g} (fp32)",
              file=sys.stderr)


class TestPipelinePieces(unittest.TestCase):
    def test_tile_starts(self):
        self.assertEqual(tile_starts(110, 64, 0.5), [0, 23, 46])
        self.assertEqual(tile_starts(64, 64, 0.5), [0])
        self.assertEqual(tile_starts(30, 64, 0.5), [0])

    def test_gaussian(self):
        g = gaussian_map([5, 8, 9])
        self.assertAlmostEqual(float(g[2, 4, 4]), 10.0, places=5)
        self.assertGreater(float(g.min()), 0)

    def test_orientation_round_trip_all_48(self):
        a = np.arange(4 * 5 * 6).reshape(4, 5, 6)
        for perm in itertools.permutations(range(3)):
            for signs in itertools.product([1, -1], repeat=3):
                M = np.zeros((3, 3))
                for i, (p, s) in enumerate(zip(perm, signs)):
                    M[p, i] = s
                o = Orientation(M[:, 0], M[:, 1], M[:, 2], [0.7, 0.8, 2.0], "RAS", [0, 1, 2])
                self.assertTrue(np.array_equal(o.backward(o.forward(a)), a))
        o = Orientation([1, 0, 0], [0, 1, 0], [0, 0, 1], [0.7, 0.8, 2.0], "RAS", [0, 1, 2])
        self.assertEqual(o.spacing, [2.0, 0.8, 0.7])


if __name__ == "__main__":
    unittest.main()
