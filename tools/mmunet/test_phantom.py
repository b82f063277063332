"""Tests of labels.py and phantom.py.

Run from the repository root:
    /usr/bin/python3 -m unittest tools/mmunet/test_phantom.py
"""

import os
import re
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labels  # noqa: E402
import phantom  # noqa: E402

REFERENCE_DIR = "/work/shared/testdata/totalsegmentator/tests/reference_files"
EXAMPLE_SEG = os.path.join(REFERENCE_DIR, "example_seg.nii.gz")

NAMES = labels.DEMO_LABEL_NAMES
ID = {name: i + 1 for i, name in enumerate(NAMES)}

# Plausible label volumes (cm^3) of the demo organs; wide because of the random scale.
VOLUME_RANGE = {
    "spleen": (50, 600), "kidney_right": (50, 400), "kidney_left": (50, 400),
    "gallbladder": (5, 100), "liver": (500, 2500), "stomach": (50, 900), "aorta": (20, 300),
    "inferior_vena_cava": (10, 250), "pancreas": (15, 250),
}


class LabelTableTest(unittest.TestCase):
    def test_amos_ids_and_codes(self):
        self.assertEqual([e["id"] for e in labels.AMOS_LABELS], list(range(1, 16)))
        for entry in labels.AMOS_LABELS:
            for key in ("id", "name", "segment_label", "category", "type", "rgb"):
                self.assertIn(key, entry)
            self.assertEqual(len(entry["rgb"]), 3)
            self.assertEqual(entry["type"]["scheme"], "SCT")
        liver = labels.label_by_name("liver")
        self.assertEqual(liver["type"], {"scheme": "SCT", "code": "10200004", "meaning": "Liver"})
        self.assertEqual(liver["category"]["code"], "123037004")
        self.assertEqual(labels.label_by_name("arota")["id"], 8)
        self.assertEqual(labels.label_by_name("postcava")["id"], 9)

    def test_laterality_modifier(self):
        right, left = labels.label_by_name("kidney_right"), labels.label_by_name("kidney_left")
        self.assertEqual(right["type"], left["type"])
        self.assertEqual(right["modifier"]["code"], "24028007")
        self.assertEqual(left["modifier"]["code"], "7771000")
        self.assertNotIn("modifier", labels.label_by_name("spleen"))

    def test_label_15_by_patient_sex(self):
        entry = labels.AMOS_LABELS[14]
        self.assertEqual(entry["type"]["code"], "113343008")
        self.assertEqual(entry["category"]["code"], "85756007")
        self.assertEqual(entry["by_patient_sex"]["M"]["type"]["code"], "41216001")
        self.assertEqual(entry["by_patient_sex"]["F"]["type"]["code"], "35039007")
        self.assertEqual(entry["by_patient_sex"]["F"]["rgb"], [255, 181, 158])

    def test_demo_labels(self):
        demo = labels.demo_labels()
        self.assertEqual([e["id"] for e in demo], list(range(1, 10)))
        self.assertEqual([e["name"] for e in demo], NAMES)
        self.assertEqual(demo[6]["type"]["code"], "15825003")      # aorta
        self.assertEqual(demo[6]["rgb"], [224, 97, 76])        # Slicer's aorta
        # spleen, liver and pancreas clearly apart (Euclidean RGB distance)
        rgb = {e["name"]: e["rgb"] for e in demo}
        for a, b in (("spleen", "liver"), ("spleen", "pancreas"), ("liver", "pancreas"),
                     ("liver", "stomach")):
            dist = sum((x - y) ** 2 for x, y in zip(rgb[a], rgb[b])) ** 0.5
            self.assertGreater(dist, 50, f"{a} and {b} look alike: {rgb[a]} {rgb[b]}")
        # The table itself keeps the AMOS ids.
        self.assertEqual(labels.label_by_name("aorta")["id"], 8)

    def test_map_totalseg_lut(self):
        seg = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 52, 63, 64, 117])
        out = labels.map_totalseg(seg, NAMES)
        self.assertEqual(out.dtype, np.uint8)
        expected = [0, ID["spleen"], ID["kidney_right"], ID["kidney_left"], ID["gallbladder"],
                    ID["liver"], ID["stomach"], ID["pancreas"], 0, ID["aorta"],
                    ID["inferior_vena_cava"], 0, 0]
        self.assertEqual(out.tolist(), expected)
        # Full AMOS name list: AMOS ids.
        amos = labels.map_totalseg(seg, [e["name"] for e in labels.AMOS_LABELS])
        self.assertEqual(amos.tolist(), [0, 1, 2, 3, 4, 6, 7, 10, 0, 8, 9, 0, 0])

    @unittest.skipUnless(os.path.exists(EXAMPLE_SEG), "TotalSegmentator test data missing")
    def test_map_totalseg_reference_file(self):
        import nibabel as nib
        seg = np.asanyarray(nib.load(EXAMPLE_SEG).dataobj)
        out = labels.map_totalseg(seg, NAMES)
        self.assertEqual(out.shape, seg.shape)
        counts = np.bincount(out.ravel(), minlength=len(NAMES) + 1)
        for name in ("liver", "spleen", "aorta"):
            self.assertGreater(counts[ID[name]], 100, name)
        self.assertEqual(int(counts[ID["liver"]]), int((seg == 5).sum()))


class PhantomTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hu, cls.lab = phantom.make_phantom(3, (64, 128, 128), (3.0, 3.0, 3.0))

    def test_types(self):
        self.assertEqual(self.hu.shape, (64, 128, 128))
        self.assertEqual(self.hu.dtype, np.float32)
        self.assertEqual(self.lab.dtype, np.uint8)
        self.assertLessEqual(int(self.lab.max()), len(NAMES))

    def test_deterministic(self):
        hu, lab = phantom.make_phantom(3, (64, 128, 128), (3.0, 3.0, 3.0))
        self.assertEqual(hu.tobytes(), self.hu.tobytes())
        self.assertEqual(lab.tobytes(), self.lab.tobytes())
        hu2, _ = phantom.make_phantom(4, (64, 128, 128), (3.0, 3.0, 3.0))
        self.assertNotEqual(hu2.tobytes(), self.hu.tobytes())

    def check_anatomy(self, hu, lab, spacing, seed):
        voxel_cm3 = float(np.prod(spacing)) / 1000.0
        counts = np.bincount(lab.ravel(), minlength=len(NAMES) + 1)
        for name in NAMES:
            volume = counts[ID[name]] * voxel_cm3
            lo, hi = VOLUME_RANGE[name]
            self.assertTrue(lo <= volume <= hi, "seed %d %s %.0f cm3" % (seed, name, volume))
        self.assertEqual(int(np.argmax(counts[1:])) + 1, ID["liver"], "liver is largest")

        def mean_index(name):
            return np.argwhere(lab == ID[name]).mean(axis=0)    # (k, r, c)

        # Patient right = low column, anterior = low row.
        self.assertLess(mean_index("kidney_right")[2], mean_index("kidney_left")[2])
        self.assertLess(mean_index("liver")[2], mean_index("spleen")[2])
        self.assertLess(mean_index("inferior_vena_cava")[2], mean_index("aorta")[2])
        self.assertLess(mean_index("gallbladder")[1], mean_index("kidney_right")[1])
        # The spleen top is above the kidney tops (slice index grows towards the head).
        top = {n: np.nonzero((lab == ID[n]).any(axis=(1, 2)))[0].max() for n in NAMES}
        self.assertGreater(top["spleen"], max(top["kidney_right"], top["kidney_left"]))

        # Typical portal-venous attenuation (medians are robust to partial volume).
        def median_hu(name):
            return float(np.median(hu[lab == ID[name]]))
        self.assertTrue(70 <= median_hu("liver") <= 130)
        self.assertTrue(median_hu("aorta") > median_hu("liver"))
        self.assertTrue(-20 <= median_hu("gallbladder") <= 50)
        self.assertLess(float(hu[:, :4, :4].mean()), -900)                     # air
        self.assertGreater(float(hu.max()), 300)                               # bone

    def test_anatomy_default(self):
        self.check_anatomy(self.hu, self.lab, (3.0, 3.0, 3.0), 3)

    def test_anatomy_other_seeds(self):
        for seed in (0, 1, 2, 5, 11):
            hu, lab = phantom.make_phantom(seed, (64, 128, 128), (3.0, 3.0, 3.0))
            self.check_anatomy(hu, lab, (3.0, 3.0, 3.0), seed)

    def test_not_every_organ_in_every_slice(self):
        present = np.stack([(self.lab == i).any(axis=(1, 2)) for i in range(1, 10)], axis=1)
        self.assertFalse(present.all(axis=1).all())
        self.assertTrue(present[:, ID["aorta"] - 1].all())

    def test_label_subset(self):
        hu, lab = phantom.make_phantom(3, (64, 128, 128), (3.0, 3.0, 3.0),
                                       labels=["liver", "spleen"])
        self.assertEqual(hu.tobytes(), self.hu.tobytes())
        self.assertEqual(sorted(np.unique(lab).tolist()), [0, 1, 2])
        np.testing.assert_array_equal(lab == 1, self.lab == ID["liver"])
        np.testing.assert_array_equal(lab == 2, self.lab == ID["spleen"])
        with self.assertRaises(ValueError):
            phantom.make_phantom(3, (8, 16, 16), labels=["brain"])


class DicomTest(unittest.TestCase):
    SPACING = (2.5, 1.5, 1.25)          # sz, sy, sx: distinct so that swaps show
    ORIGIN = (-150.0, -120.0, -300.0)   # x0, y0, z0

    @classmethod
    def setUpClass(cls):
        cls.hu, cls.lab = phantom.make_phantom(9, (12, 80, 96), cls.SPACING)
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def write(self, sub, **kw):
        out = os.path.join(self.tmp.name, sub)
        return phantom.write_dicom_series(self.hu, self.lab, out, self.SPACING, self.ORIGIN,
                                          seed=9, **kw)

    def read(self, paths):
        import pydicom
        return sorted((pydicom.dcmread(p) for p in paths), key=lambda d: int(d.InstanceNumber))

    def test_series_round_trip(self):
        paths = self.write("plain")
        self.assertEqual(len(paths), 12)
        dss = self.read(paths)
        pix = np.stack([d.pixel_array for d in dss])
        self.assertEqual(pix.dtype, np.int16)
        np.testing.assert_array_equal(pix, np.rint(self.hu).astype(np.int16))
        sz, sy, sx = self.SPACING
        x0, y0, z0 = self.ORIGIN
        uid = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")
        sops = set()
        for k, d in enumerate(dss):
            self.assertEqual(d.file_meta.TransferSyntaxUID, "1.2.840.10008.1.2.1")
            self.assertEqual(d.SOPClassUID, "1.2.840.10008.5.1.4.1.1.2")
            self.assertEqual(d.file_meta.MediaStorageSOPInstanceUID, d.SOPInstanceUID)
            for u in (d.SOPInstanceUID, d.SeriesInstanceUID, d.StudyInstanceUID,
                      d.FrameOfReferenceUID):
                self.assertRegex(str(u), uid)
                self.assertLessEqual(len(str(u)), 64)
            sops.add(d.SOPInstanceUID)
            self.assertEqual(d.InstanceNumber, k + 1)
            self.assertEqual(d.Modality, "CT")
            self.assertEqual(list(d.ImageType), ["ORIGINAL", "PRIMARY", "AXIAL"])
            self.assertEqual(str(d.PatientName), "PHANTOM^9")
            self.assertEqual(d.PatientSex, "O")
            self.assertEqual(d.BodyPartExamined, "ABDOMEN")
            self.assertEqual((d.Rows, d.Columns), (80, 96))
            self.assertEqual([float(v) for v in d.PixelSpacing], [sy, sx])
            self.assertEqual([float(v) for v in d.ImageOrientationPatient], [1, 0, 0, 0, 1, 0])
            np.testing.assert_allclose([float(v) for v in d.ImagePositionPatient],
                                       [x0, y0, z0 + k * sz])
            self.assertAlmostEqual(float(d.SpacingBetweenSlices), sz)
            self.assertAlmostEqual(float(d.SliceThickness), sz)
            self.assertEqual(int(d.ImagesInAcquisition), 12)
            self.assertEqual((d.BitsAllocated, d.BitsStored, d.HighBit,
                              d.PixelRepresentation), (16, 16, 15, 1))
            self.assertEqual((float(d.RescaleIntercept), float(d.RescaleSlope)), (0.0, 1.0))
        self.assertEqual(len(sops), 12)
        self.assertEqual(len({d.SeriesInstanceUID for d in dss}), 1)
        # Same seed, same UIDs.
        again = self.read(self.write("again"))
        self.assertEqual([d.SOPInstanceUID for d in again], [d.SOPInstanceUID for d in dss])

    def test_voxel_to_patient_matches_nifti(self):
        # DICOM: P = IPP + c * sx * row_dir + r * sy * col_dir; NIfTI: RAS = affine (c, r, k).
        d = self.read(self.write("geom"))[5]
        ipp = np.array([float(v) for v in d.ImagePositionPatient])
        iop = np.array([float(v) for v in d.ImageOrientationPatient])
        sy, sx = (float(v) for v in d.PixelSpacing)
        affine = phantom.nifti_affine(self.SPACING, self.ORIGIN)
        for r, c in ((0, 0), (7, 3), (79, 95)):
            lps = ipp + c * sx * iop[:3] + r * sy * iop[3:]
            ras = affine @ np.array([c, r, 5, 1.0])
            np.testing.assert_allclose(ras[:3] * [-1, -1, 1], lps, atol=1e-6)

    def test_transfer_syntaxes(self):
        from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, RLELossless
        want = np.rint(self.hu[:3]).astype(np.int16)
        for ts in (ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless):
            hu3 = self.hu[:3]
            out = os.path.join(self.tmp.name, "ts-" + ts)
            dss = self.read(phantom.write_dicom_series(hu3, None, out, self.SPACING,
                                                       transfer_syntax=ts, seed=9))
            self.assertEqual(dss[0].file_meta.TransferSyntaxUID, ts)
            np.testing.assert_array_equal(np.stack([d.pixel_array for d in dss]), want)

    def test_tilt(self):
        dss = self.read(self.write("tilt", tilt_deg=15.0))
        t = np.radians(15.0)
        for k, d in enumerate(dss):
            iop = [float(v) for v in d.ImageOrientationPatient]
            np.testing.assert_allclose(iop, [1, 0, 0, 0, np.cos(t), np.sin(t)], atol=1e-6)
            ipp = [float(v) for v in d.ImagePositionPatient]
            np.testing.assert_allclose(ipp, [self.ORIGIN[0], self.ORIGIN[1],
                                             self.ORIGIN[2] + k * self.SPACING[0]])
        self.assertAlmostEqual(float(dss[0].GantryDetectorTilt), 15.0)
        self.assertAlmostEqual(float(dss[0].SpacingBetweenSlices), 2.5 * np.cos(t), places=5)

    def test_irregular_positions(self):
        zs = [0.0, 2.5, 5.0, 10.0, 12.5, 15.0, 17.5, 20.0, 22.5, 25.0, 30.0, 32.5]
        dss = self.read(self.write("irregular", positions=zs))
        self.assertEqual([float(d.ImagePositionPatient[2]) for d in dss], zs)
        self.assertNotIn("SpacingBetweenSlices", dss[0])
        with self.assertRaises(ValueError):
            self.write("bad", positions=zs[:3])


class NiftiTest(unittest.TestCase):
    def test_axcodes_and_affine(self):
        import nibabel as nib
        spacing, origin = (3.0, 2.0, 1.5), (-100.0, -80.0, 40.0)
        arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)   # (k, r, c)
        with tempfile.TemporaryDirectory() as tmp:
            path = phantom.save_nifti(arr, os.path.join(tmp, "v.nii.gz"), spacing, origin)
            img = nib.load(path)
            self.assertEqual(nib.aff2axcodes(img.affine), ("L", "P", "S"))
            data = np.asanyarray(img.dataobj)
            self.assertEqual(data.shape, (6, 5, 4))
            np.testing.assert_array_equal(data, arr.transpose(2, 1, 0))
            # Voxel (k=3, r=4, c=5) sits at LPS (x0 + 5 sx, y0 + 4 sy, z0 + 3 sz).
            ras = img.affine @ np.array([5, 4, 3, 1.0])
            np.testing.assert_allclose(ras[:3], [100.0 - 7.5, 80.0 - 8.0, 49.0])
            self.assertEqual(int(img.header["sform_code"]), 1)


if __name__ == "__main__":
    unittest.main()
