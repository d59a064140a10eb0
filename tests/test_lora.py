"""LoRA dropout fused into lora_A: the same function and gradients as peft's, without the kept copies."""

import pytest
import torch

from pipeline.training.lora import DropoutLinear, _Fused, _keep, lean_dropout


def reference(x, weight, p, keep):
    """Dropout with the same mask, then a linear layer, as plain autograd computes it."""
    return torch.nn.functional.linear(x * keep.float() / (1 - p), weight)


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_same_output_and_gradients_as_dropout_then_linear(p):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, requires_grad=True)
    weight = torch.randn(4, 8, requires_grad=True)
    keep = _keep(x, p)
    out = _Fused.apply(x, weight, keep, p)
    expected = reference(x, weight, p, keep)
    assert torch.allclose(out, expected)
    grad = torch.randn_like(out)
    fused = torch.autograd.grad(out, (x, weight), grad)
    plain = torch.autograd.grad(expected, (x, weight), grad)
    for a, b in zip(fused, plain):
        assert torch.allclose(a, b, atol=1e-6)


def test_masks_drop_the_expected_share_and_keep_one_byte_a_value():
    torch.manual_seed(7)
    keep = _keep(torch.empty(100_000), 0.2)
    assert keep.dtype == torch.bool and keep.element_size() == 1
    assert abs((~keep).float().mean().item() - 0.2) < 0.01
    torch.manual_seed(7)
    assert torch.equal(keep, _keep(torch.empty(100_000), 0.2))  # the global seed repeats it


def test_eval_mode_is_the_plain_linear_and_training_is_reproducible():
    linear = torch.nn.Linear(8, 4, bias=False)
    fused = DropoutLinear(linear, 0.5)
    x = torch.randn(2, 8)
    fused.eval()
    assert torch.equal(fused(x), linear(x))
    fused.train()
    torch.manual_seed(3)
    first = fused(x)
    torch.manual_seed(3)
    assert torch.equal(first, fused(x))
    assert fused.weight is linear.weight  # the same parameter: state dicts and merging are unchanged


def test_mixed_precision_backward_under_autocast():
    """bf16 autocast (as bf16 training runs) gives gradients in the parameters' dtype."""
    x = torch.randn(4, 16, requires_grad=True)
    layer = DropoutLinear(torch.nn.Linear(16, 8, bias=False), 0.1).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    out.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    assert torch.isfinite(layer.weight.grad).all()


def test_lean_dropout_on_a_peft_model_trains_saves_and_reloads(tmp_path):
    from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "base")
    model = get_peft_model(LlamaForCausalLM.from_pretrained(tmp_path / "base"),
                           LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear", lora_dropout=0.1))
    assert lean_dropout(model) == 2 * 7
    assert lean_dropout(model) == 0  # nothing left to fuse
    ids = torch.randint(0, 64, (2, 16))
    before = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight.clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    after = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert not torch.equal(before, after)
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    reloaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-5)


def test_a_bf16_input_is_kept_in_bf16_not_as_a_float32_copy(tmp_path):
    """peft casts a bf16 input to lora_A's float32; the fused layer keeps the input it was given."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.training.lora import lean_dropout

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    for module in model.modules():  # peft keeps adapters in float32
        if hasattr(module, "lora_A"):
            for layer in (*module.lora_A.values(), *module.lora_B.values()):
                layer.float()
    assert lean_dropout(model) == 2
    ids = torch.randint(0, 50, (2, 16))

    def float32_inputs():
        """float32 tensors of a layer input's size kept for the backward pass (the norms keep some)."""
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return sum(1 for t in saved if t.dtype == torch.float32 and t.numel() == 2 * 16 * 64)

    ours = float32_inputs()
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = True  # peft's cast, as before
    assert float32_inputs() == ours + 2  # a float32 copy for each of q_proj and v_proj
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_" in n}
    assert all(g is not None and g.dtype == torch.float32 for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # lora_A's is 0 while B is 0
    model.eval()
    with torch.no_grad():
        assert model(input_ids=ids).logits.dtype == torch.bfloat16  # eval: the plain linear, cast first
