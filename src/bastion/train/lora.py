"""LoRA adapters for fine-tuning a text model, through Hugging Face PEFT.

``with_adapters`` injects low-rank adapters (PEFT's ``inject_adapter_in_model``, which works
on any torch module) into the named linear layers of every block and freezes every other
parameter: only the adapters train, so DP-SGD clips and noises only them (Opacus computes
per-sample gradients for trainable parameters only, and the adapters are ``nn.Linear``
layers it supports). ``merged`` folds each adapter into its layer's weight and puts the
plain layer back: the trained model has the architecture ``build_model`` builds, so its
package, serving and fine-tuning need no PEFT.
"""

from __future__ import annotations

from torch import nn

from bastion.train.config import LoraSpec

__all__ = ["merged", "with_adapters"]


def with_adapters(model: nn.Module, spec: LoraSpec) -> tuple[nn.Module, int]:
    """``model`` with adapters on ``spec.targets``, everything else frozen; and how many
    parameters train."""
    from peft import LoraConfig, inject_adapter_in_model  # noqa: PLC0415 - imports transformers

    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(spec.targets),
    )
    model = inject_adapter_in_model(config, model)
    trainable = 0
    for name, parameter in model.named_parameters():
        parameter.requires_grad = "lora_" in name
        trainable += parameter.numel() if parameter.requires_grad else 0
    return model, trainable


def merged(model: nn.Module) -> nn.Module:
    """``model`` with every adapter folded into its layer and the plain layer put back."""
    from peft.tuners.lora import LoraLayer  # noqa: PLC0415

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, attribute = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attribute, module.get_base_layer())
    for parameter in model.parameters():
        parameter.requires_grad = True
    return model
