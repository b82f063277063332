"""Make the MM-UNet trainers visible to nnU-Net v2.

nnU-Net v2 finds the class named by `nnUNetv2_train ... -tr NAME` (and the trainer recorded in a
checkpoint, at prediction time) by importing the modules below its own package folder
`nnunetv2/training/nnUNetTrainer/` one by one until one has an attribute of that name.  This
script writes a small package there,

    nnunetv2/training/nnUNetTrainer/variants/mmsegd/__init__.py
    nnunetv2/training/nnUNetTrainer/variants/mmsegd/nnUNetTrainerMMUNet.py

whose module imports the trainers from tools/mmunet/nnunet_trainer.py of this checkout (by its
absolute path), so later edits of the trainers take effect without reinstalling.  Run it with
the Python interpreter that has nnunetv2 installed:

    _build/venv-ref/bin/python tools/mmunet/install_nnunet_trainer.py [--remove]

It is idempotent: files that already have the right content are left alone.  It prints what it
wrote or removed.
"""

import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.dirname(HERE)
PACKAGE = "mmsegd"

SHIM = '''"""MM-UNet trainers for nnU-Net v2, imported from the mmsegd checkout.

Written by tools/mmunet/install_nnunet_trainer.py; rerun it (or remove this folder) after
moving the checkout.
"""
import sys

_TOOLS = {tools!r}
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)

from mmunet.nnunet_trainer import (  # noqa: E402,F401
    nnUNetTrainerMMUNet, nnUNetTrainerMMUNet_2epochs, nnUNetTrainerMMUNet_2epochs_500it,
    nnUNetTrainer_2epochs_500it)
'''

INIT = '"""MM-UNet trainers (see nnUNetTrainerMMUNet.py)."""\n'


def target_folder():
    import nnunetv2
    return os.path.join(os.path.dirname(nnunetv2.__file__), "training", "nnUNetTrainer",
                        "variants", PACKAGE)


def write_if_changed(path, text):
    """Write `text` to `path` unless it already holds it; True when written."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def install():
    folder = target_folder()
    os.makedirs(folder, exist_ok=True)
    files = {
        os.path.join(folder, "__init__.py"): INIT,
        os.path.join(folder, "nnUNetTrainerMMUNet.py"): SHIM.format(tools=TOOLS),
    }
    for path, text in files.items():
        print(("wrote " if write_if_changed(path, text) else "unchanged ") + path)
    # Check that nnU-Net's own lookup (the one behind -tr NAME) finds the classes.
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    search = os.path.join(os.path.dirname(nnunetv2.__file__), "training", "nnUNetTrainer")
    for name in ("nnUNetTrainerMMUNet", "nnUNetTrainerMMUNet_2epochs",
                 "nnUNetTrainerMMUNet_2epochs_500it", "nnUNetTrainer_2epochs_500it"):
        cls = recursive_find_python_class(search, name, "nnunetv2.training.nnUNetTrainer")
        if cls is None:
            raise RuntimeError(f"nnU-Net does not find {name} under {search}")
        print(f"nnU-Net finds {name} (defined in {cls.__module__})")


def remove():
    folder = target_folder()
    if os.path.isdir(folder):
        shutil.rmtree(folder)
        print("removed " + folder)
    else:
        print("nothing to remove at " + folder)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--remove", action="store_true", help="remove the shim package instead")
    args = ap.parse_args(argv)
    try:
        remove() if args.remove else install()
    except ImportError as e:
        print(f"error: nnunetv2 is not importable with {sys.executable}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
