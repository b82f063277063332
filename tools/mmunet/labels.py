"""Label tables for mmunet models (docs/mmunet.md section 6).

AMOS_LABELS is the AMOS2022 table in the model-card `labels` format (section 4.2): one dict per
foreground id with `id`, `name`, `segment_label`, `category`, `type`, optional `modifier`,
optional `by_patient_sex` and `rgb`. Codes are SNOMED CT (scheme "SCT"); meanings are spelled as
in the doc table.

DEMO_LABEL_NAMES is the 9-organ subset that the synthetic phantom (phantom.py) paints and that
TotalSegmentator's "total" task also segments, so the phantom and the TotalSegmentator reference
files can be scored with the same label map.
"""

import copy

import numpy as np

# Segmented Property Category of every organ.
_ANATOMICAL_STRUCTURE = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}

# Laterality, written as the Segmented Property Type Modifier.
_RIGHT = {"scheme": "SCT", "code": "24028007", "meaning": "Right"}
_LEFT = {"scheme": "SCT", "code": "7771000", "meaning": "Left"}


def _sct(code, meaning):
    return {"scheme": "SCT", "code": code, "meaning": meaning}


def _organ(lid, name, segment_label, type_code, type_meaning, rgb, modifier=None):
    entry = {
        "id": lid,
        "name": name,
        "segment_label": segment_label,
        "category": dict(_ANATOMICAL_STRUCTURE),
        "type": _sct(type_code, type_meaning),
    }
    if modifier is not None:
        entry["modifier"] = dict(modifier)
    entry["rgb"] = list(rgb)
    return entry


# AMOS2022 ids 1..15 (AMOS dataset.json order). BTCV ids are in the doc table, not here.
# Colours: 3D Slicer's GenericAnatomyColors (the anatomical colour table of Slicer's
# terminology) wherever it has the organ; it gives both kidneys, and both adrenal glands, one
# colour. Not from it: the stomach, whose Slicer colour (216, 132, 105) is within a few units of
# the liver's (221, 130, 101), gets a yellow of its own; the inferior vena cava (venous blue)
# and the duodenum, which that table does not list, and label 15 when PatientSex is not known
# get colours of ours.
AMOS_LABELS = [
    _organ(1, "spleen", "Spleen", "78961009", "Spleen", (157, 108, 162)),
    _organ(2, "kidney_right", "Right kidney", "64033007", "Kidney", (185, 102, 83), _RIGHT),
    _organ(3, "kidney_left", "Left kidney", "64033007", "Kidney", (185, 102, 83), _LEFT),
    _organ(4, "gallbladder", "Gallbladder", "28231008", "Gallbladder", (139, 150, 98)),
    _organ(5, "esophagus", "Esophagus", "32849002", "Esophagus", (211, 171, 143)),
    _organ(6, "liver", "Liver", "10200004", "Liver", (221, 130, 101)),
    _organ(7, "stomach", "Stomach", "69695003", "Stomach", (255, 226, 77)),
    _organ(8, "aorta", "Aorta", "15825003", "Aorta", (224, 97, 76)),
    _organ(9, "inferior_vena_cava", "Inferior vena cava", "64131007", "Inferior vena cava",
           (0, 70, 200)),
    _organ(10, "pancreas", "Pancreas", "15776009", "Pancreas", (249, 180, 111)),
    _organ(11, "adrenal_gland_right", "Right adrenal gland", "23451007", "Adrenal gland",
           (249, 186, 150), _RIGHT),
    _organ(12, "adrenal_gland_left", "Left adrenal gland", "23451007", "Adrenal gland",
           (249, 186, 150), _LEFT),
    _organ(13, "duodenum", "Duodenum", "38848004", "Duodenum", (90, 160, 200)),
    _organ(14, "urinary_bladder", "Urinary bladder", "89837001", "Urinary bladder",
           (222, 154, 132)),
    # Label 15 depends on PatientSex (0010,0040). The base entry is the fallback for "O",
    # empty or absent; `by_patient_sex` overrides segment_label, category, type and rgb.
    {
        "id": 15,
        "name": "prostate_or_uterus",
        "segment_label": "Prostate or uterus",
        "category": _sct("85756007", "Tissue"),
        "type": _sct("113343008", "Organ"),
        "rgb": [215, 140, 175],
        "by_patient_sex": {
            "M": {
                "segment_label": "Prostate",
                "category": dict(_ANATOMICAL_STRUCTURE),
                "type": _sct("41216001", "Prostate"),
                "rgb": [230, 158, 140],
            },
            "F": {
                "segment_label": "Uterus",
                "category": dict(_ANATOMICAL_STRUCTURE),
                "type": _sct("35039007", "Uterus"),
                "rgb": [255, 181, 158],
            },
        },
    },
]

# AMOS's own spellings of two names, kept only as aliases (doc section 6).
NAME_ALIASES = {"arota": "aorta", "postcava": "inferior_vena_cava"}

_BY_NAME = {entry["name"]: entry for entry in AMOS_LABELS}

# The phantom's organs, in the order that gives their demo ids 1..9.
DEMO_LABEL_NAMES = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach",
                    "aorta", "inferior_vena_cava", "pancreas"]

# TotalSegmentator v2 "total" class id -> our name (totalsegmentator/map_to_binary.py,
# class_map["total"]). Only the demo organs are mapped.
TOTALSEG_TO_NAME = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "liver",
    6: "stomach",
    7: "pancreas",
    52: "aorta",
    63: "inferior_vena_cava",
}


def label_by_name(name):
    """Return a deep copy of the AMOS_LABELS entry called `name` (aliases accepted).

    Raises KeyError for an unknown name.
    """
    name = NAME_ALIASES.get(name, name)
    return copy.deepcopy(_BY_NAME[name])


def card_labels(names):
    """Card label entries for `names`, renumbered 1..len(names) in the given order.

    Codes, colours and modifiers are copied from AMOS_LABELS; only `id` changes.
    """
    out = []
    for i, name in enumerate(names):
        entry = label_by_name(name)
        entry["id"] = i + 1
        out.append(entry)
    return out


def demo_labels():
    """Card label entries of DEMO_LABEL_NAMES, ids 1..9 in that order."""
    return card_labels(DEMO_LABEL_NAMES)


def map_totalseg(seg, names):
    """Map a TotalSegmentator "total" label map onto our ids.

    seg:   integer array of TotalSegmentator v2 "total" class ids (any shape).
    names: our label names; a voxel of a mapped organ gets the organ's position in `names` + 1.
    Returns a uint8 array of seg's shape, 0 wherever the class is not mapped or not in `names`.
    Names that TOTALSEG_TO_NAME does not cover (e.g. "esophagus") simply get no voxels, so the
    full AMOS name list can be passed to obtain AMOS ids.
    """
    if len(names) > 255:
        raise ValueError("more than 255 names do not fit in uint8")
    seg = np.asarray(seg)
    if seg.size and int(seg.min()) < 0:
        raise ValueError("negative label ids")
    index = {NAME_ALIASES.get(n, n): i + 1 for i, n in enumerate(names)}
    top = int(seg.max()) if seg.size else 0
    lut = np.zeros(max(top, max(TOTALSEG_TO_NAME)) + 1, dtype=np.uint8)
    for ts_id, name in TOTALSEG_TO_NAME.items():
        lut[ts_id] = index.get(name, 0)
    return lut[seg.astype(np.intp, copy=False)]
