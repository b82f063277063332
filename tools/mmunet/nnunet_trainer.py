"""nnU-Net v2 trainers that train the MM-UNet of mmunet.md section 2.

    nnUNetTrainerMMUNet           nnU-Net's default schedule (1000 epochs of 250 iterations)
    nnUNetTrainerMMUNet_2epochs   2 epochs of 5 + 2 iterations: a smoke test of the integration
    nnUNetTrainerMMUNet_2epochs_500it, nnUNetTrainer_2epochs_500it
                                  2 epochs of 500 + 5 iterations, MM-UNet and nnU-Net's own
                                  network of the plan (PlainConvUNet, ResidualEncoderUNet):
                                  the tiny trainings of nnunet_families.py

The network comes from the 3d plan of a configuration: n_stages, features_per_stage,
kernel_sizes and strides are the plan's values (nnU-Net fills features_per_stage with
min(32 * 2^s, 320) by default); the blocks per stage follow mmunet.md 2.2 (2 for s < ceil(S/2),
else 1, in the encoder and the decoder alike), and the mixer takes its defaults (2.6).  The
plan's n_conv_per_stage values do not apply to MM-UNet and are ignored.

Finding the trainer.  `nnUNetv2_train ... -tr NAME` and the predictor look a trainer class up by
name among the modules of the installed package `nnunetv2.training.nnUNetTrainer`, so these
classes must be importable from there: `python3 tools/mmunet/install_nnunet_trainer.py` (run
with the Python that has nnunetv2) writes a small module into that package that imports them
from this directory.  Recent nnunetv2 versions also search the folders named in the
environment variable nnUNet_extTrainer.

Deep supervision.  The network always has its deep-supervision heads (`decoder.ds_heads.*`), so
that a checkpoint written with deep supervision on loads into a network built with it off, as
nnU-Net's predictor does; only the attribute `deep_supervision` of the network switches the
extra outputs, and `set_deep_supervision_enabled` sets that attribute.  The heads are ignorable
tensors of the model file (export_nnunet.py drops them).

Precision.  Mamba must run in fp32 (mmunet.md 3.2): every bidirectional Mamba runs with
autocast disabled and its input cast to fp32, so on CUDA, where nnU-Net trains and predicts
under autocast, only the convolutions use fp16.  On the CPU nnU-Net uses no autocast at all, so
the whole network runs in fp32.  torch.compile is off unless nnUNet_compile asks for it: the
pure-PyTorch selective scan gains nothing from it and compiles slowly.

The helpers at the top (`arch_kwargs_from_plans`, `build_mmunet`) need only torch, so that
export_nnunet.py can rebuild the network without nnU-Net installed.
"""

import inspect
import os
import pydoc
from copy import deepcopy

import torch
import torch.nn as nn

try:
    from .model import BiMamba, MMUNet
except ImportError:  # run as a plain script from tools/mmunet
    from model import BiMamba, MMUNet


# ------------------------------------------------------------------------------ plan -> network
def resolve_configuration(plans, configuration):
    """The configuration dict of `plans`, with nnU-Net's `inherits_from` chain applied."""
    configs = plans["configurations"]
    if configuration not in configs:
        raise KeyError(f"plans have no configuration {configuration!r} "
                       f"(available: {', '.join(sorted(configs))})")
    conf = deepcopy(configs[configuration])
    if "inherits_from" in conf:
        parent = resolve_configuration(plans, conf.pop("inherits_from"))
        parent.update(conf)
        conf = parent
    return conf


def arch_kwargs_from_plans(plans, configuration):
    """The network keyword arguments of a configuration of a plans.json dict.

    Plans of nnunetv2 >= 2.4 keep them in `architecture.arch_kwargs`; older plans have
    conv_kernel_sizes, pool_op_kernel_sizes and base/max feature counts instead, which are
    converted the way nnU-Net's ConfigurationManager converts them.
    """
    conf = resolve_configuration(plans, configuration)
    if "architecture" in conf:
        return deepcopy(conf["architecture"]["arch_kwargs"])
    n_stages = len(conf["conv_kernel_sizes"])
    return {
        "n_stages": n_stages,
        "features_per_stage": [min(conf["UNet_base_num_features"] * 2 ** s,
                                   conf["unet_max_num_features"]) for s in range(n_stages)],
        "kernel_sizes": deepcopy(conf["conv_kernel_sizes"]),
        "strides": deepcopy(conf["pool_op_kernel_sizes"]),
    }


def _init_conv_he(net):
    """nnU-Net's InitWeights_He(1e-2) on the 3D convolutions: Kaiming-normal weights with
    negative slope 0.01, zero biases.  Mamba's own layers keep their mamba_ssm initialisation."""
    for m in net.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, a=1e-2)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _BiMambaFP32(BiMamba):
    """A BiMamba that runs in fp32 with autocast disabled (same parameters, same math)."""

    def forward(self, h, taps=None):
        with torch.autocast(device_type=h.device.type, enabled=False):
            return super().forward(h.float(), taps)


def build_mmunet(arch_kwargs, num_input_channels, num_output_channels,
                 enable_deep_supervision=False, arch_kwargs_req_import=(), initialize=True):
    """MMUNet from the plan's network keyword arguments (see the module docstring).

    The kwargs go to MMUNet as nnU-Net's get_network_from_plans would pass them (the names in
    `arch_kwargs_req_import` are resolved to classes first), so MMUNet checks, for instance,
    that conv_op is a 3D convolution.  Every Mamba is made to run in fp32 under autocast.
    """
    kwargs = dict(arch_kwargs)
    for name in arch_kwargs_req_import:
        if isinstance(kwargs.get(name), str):
            kwargs[name] = pydoc.locate(kwargs[name])
    for name in ("kernel_sizes", "strides"):
        if any(len(v) != 3 for v in kwargs[name]):
            raise ValueError(f"MMUNet is 3D only; the plan has {name} {kwargs[name]}")
    net = MMUNet(input_channels=num_input_channels, num_classes=num_output_channels,
                 deep_supervision=True, **kwargs)
    net.deep_supervision = bool(enable_deep_supervision)
    if initialize:
        _init_conv_he(net)
    for m in net.modules():
        if type(m) is BiMamba:
            m.__class__ = _BiMambaFP32    # adds no state: names and weights are unchanged
    return net


# ------------------------------------------------------------------------------ the trainers
try:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
except ImportError:  # nnU-Net is not installed: only the helpers above are usable
    nnUNetTrainer = None


def _unwrap(network):
    """The MMUNet inside DDP and torch.compile wrappers."""
    if hasattr(network, "module"):            # DistributedDataParallel
        network = network.module
    return getattr(network, "_orig_mod", network)   # torch.compile's OptimizedModule


if nnUNetTrainer is not None:

    class nnUNetTrainerMMUNet(nnUNetTrainer):
        """nnU-Net's default training of the MM-UNet built from the plan."""

        @staticmethod
        def build_network_architecture(plans_manager, configuration_manager, *args, **kwargs):
            """Both calling conventions of nnunetv2:

            current (2.8.1): (plans_manager, configuration_manager, num_input_channels,
                              num_output_channels, enable_deep_supervision=True)
            earlier (plans with an `architecture` section, from 2.4 on):
                (architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
                 num_input_channels, num_output_channels, enable_deep_supervision=True)

            The current nnunetv2 uses the first form when the signature has `plans_manager`
            (this one has); the earlier form passes the class name, a string, first.
            """
            if isinstance(plans_manager, str):
                arch_kwargs = configuration_manager
                names = ("arch_init_kwargs_req_import", "num_input_channels",
                         "num_output_channels", "enable_deep_supervision")
            else:
                arch_kwargs = configuration_manager.network_arch_init_kwargs
                names = ("num_input_channels", "num_output_channels", "enable_deep_supervision")
            if len(args) > len(names):
                raise TypeError(f"build_network_architecture: {len(args)} positional arguments "
                                f"after the first two, expected at most {len(names)}")
            a = dict(zip(names, args))
            a.update(kwargs)
            req_import = a.get("arch_init_kwargs_req_import")
            if req_import is None and not isinstance(plans_manager, str):
                req_import = configuration_manager.network_arch_init_kwargs_req_import
            return build_mmunet(arch_kwargs, a["num_input_channels"], a["num_output_channels"],
                                a.get("enable_deep_supervision", True), req_import or ())

        def set_deep_supervision_enabled(self, enabled: bool):
            # nnU-Net's own networks keep the switch in `decoder`; MMUNet keeps it on itself.
            _unwrap(self.network).deep_supervision = enabled

        def _do_i_compile(self):
            return os.environ.get("nnUNet_compile", "").lower() in ("true", "1", "t")

    class nnUNetTrainerMMUNet_2epochs(nnUNetTrainerMMUNet):
        """A short run that exercises training, checkpointing, validation and export."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_epochs = 2
            self.num_iterations_per_epoch = 5
            self.num_val_iterations_per_epoch = 2

        # nnUNetTrainer.__init__ records its arguments by the parameter names of
        # type(self).__init__ (they go into the checkpoint), so this __init__ must show them.
        __init__.__signature__ = inspect.signature(nnUNetTrainer.__init__)

    def _train_threads():
        """torch's CPU threads from MMSEGD_TRAIN_THREADS, where set: nnUNetv2_train gives torch
        every core, and on a shared machine torch's threads then wait on each other (a tiny
        network trains 20 times slower with 2 threads than with 1 on 2 busy cores)."""
        n = os.environ.get("MMSEGD_TRAIN_THREADS")
        if n:
            torch.set_num_threads(int(n))

    class nnUNetTrainerMMUNet_2epochs_500it(nnUNetTrainerMMUNet):
        """2 epochs of 500 iterations: enough for a tiny network to draw the larger organs."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _train_threads()
            self.num_epochs = 2
            self.num_iterations_per_epoch = 500
            self.num_val_iterations_per_epoch = 5

        __init__.__signature__ = inspect.signature(nnUNetTrainer.__init__)

    class nnUNetTrainer_2epochs_500it(nnUNetTrainer):
        """nnU-Net's own trainer (the plan's network) for 2 epochs of 500 iterations; nnunetv2
        ships nnUNetTrainer_1epoch and _5epochs, of 250 iterations each."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _train_threads()
            self.num_epochs = 2
            self.num_iterations_per_epoch = 500
            self.num_val_iterations_per_epoch = 5

        __init__.__signature__ = inspect.signature(nnUNetTrainer.__init__)
