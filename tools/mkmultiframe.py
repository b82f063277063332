"""One Enhanced CT multi-frame file from a folder of single-frame CT slices (a benchmark input).

    python3 tools/mkmultiframe.py SRC_DIR OUT_FILE

The slices' pixel data are kept as they are: each frame of the new file is one slice's
codestream (encapsulated transfer syntaxes, one fragment per frame, an empty Basic Offset
Table) or its native bytes, in the order of the slices along their normal. Geometry goes into
the functional groups: Plane Position per frame; Plane Orientation, Pixel Measures (with the
slice spacing) and Pixel Value Transformation shared. Patient, study and series stay; the SOP
Instance UID is new. The slices must share size, orientation, spacing, rescale and transfer
syntax.
"""

import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def item(**kw):
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    src, out = sys.argv[1], sys.argv[2]
    slices = []
    for name in sorted(os.listdir(src)):
        p = os.path.join(src, name)
        if os.path.isfile(p):
            ds = pydicom.dcmread(p)
            if "PixelData" in ds and int(ds.get("NumberOfFrames", 1) or 1) == 1:
                slices.append(ds)
    if not slices:
        sys.exit(f"mkmultiframe: no single-frame image in {src}")
    iop = np.array([float(v) for v in slices[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda d: float(np.dot(normal, [float(v) for v in d.ImagePositionPatient])))
    first = slices[0]
    ts = first.file_meta.TransferSyntaxUID
    for d in slices:
        if (d.file_meta.TransferSyntaxUID != ts or d.Rows != first.Rows or
                d.Columns != first.Columns or
                [float(v) for v in d.ImageOrientationPatient] != list(iop)):
            sys.exit("mkmultiframe: the slices differ in transfer syntax, size or orientation")
    pos = [np.dot(normal, [float(v) for v in d.ImagePositionPatient]) for d in slices]
    step = float(np.median(np.diff(pos))) if len(pos) > 1 else float(first.SliceThickness)

    ds = Dataset()
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
               "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
               "SeriesInstanceUID", "SeriesNumber", "Modality", "FrameOfReferenceUID",
               "Manufacturer", "BodyPartExamined", "SeriesDescription"):
        if kw in first:
            setattr(ds, kw, first.data_element(kw).value)
    ds.SOPClassUID = ENHANCED_CT
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.ContentDate = first.get("ContentDate", first.get("StudyDate", ""))
    ds.ContentTime = first.get("ContentTime", first.get("StudyTime", ""))
    ds.AcquisitionDateTime = f"{ds.ContentDate}{ds.ContentTime}"
    for kw in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "SamplesPerPixel", "PhotometricInterpretation"):
        setattr(ds, kw, first.data_element(kw).value)
    ds.NumberOfFrames = len(slices)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = first.get("LossyImageCompression", "00")
    ds.PresentationLUTShape = "IDENTITY"
    ds.ContentQualification = "PRODUCT"
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PlaneOrientationSequence=Sequence([item(
            ImageOrientationPatient=list(first.ImageOrientationPatient))]),
        PixelMeasuresSequence=Sequence([item(
            PixelSpacing=list(first.PixelSpacing), SliceThickness=first.get("SliceThickness", step),
            SpacingBetweenSlices=step)]),
        PixelValueTransformationSequence=Sequence([item(
            RescaleIntercept=first.get("RescaleIntercept", 0),
            RescaleSlope=first.get("RescaleSlope", 1), RescaleType="HU")]),
    )])
    ds.PerFrameFunctionalGroupsSequence = Sequence([item(
        PlanePositionSequence=Sequence([item(
            ImagePositionPatient=list(d.ImagePositionPatient))]),
        FrameContentSequence=Sequence([item(InStackPositionNumber=k + 1, StackID="1")]),
    ) for k, d in enumerate(slices)])
    if ts.is_compressed:
        frames = [next(generate_pixel_data_frame(d.PixelData, 1)) for d in slices]
        ds.PixelData = encapsulate(frames)
    else:
        ds.PixelData = b"".join(d.PixelData for d in slices)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ts
    ds.is_little_endian, ds.is_implicit_VR = True, ts.is_implicit_VR
    if ts.is_compressed:
        ds["PixelData"].is_undefined_length = True
        ds["PixelData"].VR = "OB"
    ds.save_as(out, write_like_original=False)
    print(f"mkmultiframe: {out}: {len(slices)} frames of {first.Rows}x{first.Columns}, "
          f"transfer syntax {ts}, slice step {step:.3g} mm")


if __name__ == "__main__":
    main()
