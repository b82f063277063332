"""The bundled demo model: its recorded Dice reproduces from the committed weights.

The card's provenance.metrics were measured by train_demo.py right after training; here the
held-out phantoms are segmented again from models/demo.safetensors through the section 5
pipeline and each label's Dice must agree within 0.01.
"""

import os
import sys
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from mmunet import export, labels, phantom, pipeline, train_demo  # noqa: E402

DEMO = os.path.join(HERE, "..", "..", "models", "demo.safetensors")


class TestDemoModel(unittest.TestCase):
    def test_recorded_dice_reproduces_on_held_out_phantoms(self):
        torch.set_flush_denormal(True)
        net, card, sha = export.load_network(DEMO)
        recorded = card["provenance"]["metrics"]["phantoms"]
        names = [lab["name"] for lab in sorted(card["labels"], key=lambda l: l["id"])]
        self.assertEqual(names, labels.DEMO_LABEL_NAMES)
        eye = np.eye(3)
        cases, preds = [], []
        for seed in train_demo.VAL_SEEDS:
            hu, lab = phantom.make_phantom(seed, train_demo.PHANTOM_SHAPE,
                                           tuple(train_demo.SPACING), names)
            # validation_cases()'s tuple: (name, hu, u_c, u_r, u_k, spacing, truth)
            cases.append((f"phantom {seed}", hu, eye[0], eye[1], eye[2], train_demo.SPACING, lab))
            preds.append(pipeline.segment(net, card, hu, eye[0], eye[1], eye[2],
                                          train_demo.SPACING))
        dice = train_demo.mean_dice(preds, cases, range(1, len(names) + 1))
        for name, want in recorded.items():
            i = names.index(name) + 1
            self.assertIn(i, dice, f"{name}: no Dice (absent from truth and prediction)")
            self.assertAlmostEqual(dice[i], want, delta=0.01, msg=name)
        self.assertLess(os.path.getsize(DEMO), 10 * 1024 * 1024, "weights under 10 MB")
        self.assertIn("NOT FOR CLINICAL USE", card["description"])


if __name__ == "__main__":
    unittest.main()
