"""Export a trained stable-baselines3 policy into Catur's pickle-free model format.

SB3 saves models with pickle, which runs code on load: fine for a checkpoint you produced,
not for the model a service loads. :func:`export_layers` reads the network's linear layers
into plain arrays for :class:`catur.policy_model.PolicyModel`; :func:`check_agreement` then runs
both implementations on the same observations and counts identical decisions, so an export
that would act differently from the trained policy is caught before it is written.
:func:`load_layers` is the inverse: it writes exported layers back into a fresh SB3 network,
so a shipped or registered model can be fine-tuned (``TrainConfig.init_from``).
"""

from __future__ import annotations

import numpy as np
import torch

from catur.errors import CaturError

# Hidden activations the numpy model can run (catur.policy_model.ACTIVATIONS), by manifest name.
ACTIVATION_MODULES = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def _linear_layers(modules) -> list[torch.nn.Linear]:
    return [m for m in modules if isinstance(m, torch.nn.Linear)]


def export_layers(model) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """``(layers, activation)`` of a MaskablePPO/PPO actor or a DQN Q-network.

    Layers are ``(w[in, out], b[out])`` float32 pairs, input first, last layer linear.
    """
    policy = model.policy
    if hasattr(policy, "q_net"):  # DQN
        linears = _linear_layers(policy.q_net.q_net.modules())
        activation_fn = policy.q_net.activation_fn
    elif hasattr(policy, "mlp_extractor"):  # (Maskable)PPO
        linears = _linear_layers(policy.mlp_extractor.policy_net.modules()) + [policy.action_net]
        activation_fn = policy.activation_fn
    else:
        raise CaturError(f"cannot export a {type(model).__name__} policy")
    names = {cls: name for name, cls in ACTIVATION_MODULES.items()}
    if activation_fn not in names:
        raise CaturError(f"cannot export activation {activation_fn.__name__}; use Tanh or ReLU")
    layers = [
        (m.weight.detach().cpu().numpy().T.astype(np.float32).copy(), m.bias.detach().cpu().numpy().astype(np.float32).copy())
        for m in linears
    ]
    return layers, names[activation_fn]


def torch_score_module(model):
    """``(scores_of, parameters)``: a differentiable function obs → scores (logits or
    Q-values) of the SB3 network, and the parameters it depends on."""
    policy = model.policy
    if hasattr(policy, "q_net"):
        return policy.q_net, list(policy.q_net.parameters())

    def scores_of(obs: torch.Tensor) -> torch.Tensor:
        latent = policy.mlp_extractor.forward_actor(policy.extract_features(obs, policy.pi_features_extractor))
        return policy.action_net(latent)

    parameters = list(policy.mlp_extractor.policy_net.parameters()) + list(policy.action_net.parameters())
    return scores_of, parameters


def torch_scores(model, observations: np.ndarray) -> np.ndarray:
    """The trained network's own scores (logits or Q-values) for a batch of observations."""
    scores_of, _ = torch_score_module(model)
    with torch.no_grad():
        return scores_of(torch.as_tensor(np.asarray(observations, dtype=np.float32))).cpu().numpy()


def check_agreement(model, exported, observations: np.ndarray) -> dict:
    """Compare decisions of the torch policy and the numpy export; raise if any differ."""
    expected = np.argmax(torch_scores(model, observations), axis=1)
    got = exported.choose(observations)
    agree = int((expected == got).sum())
    if agree != len(observations):
        raise CaturError(f"exported policy disagrees with the trained one on {len(observations) - agree} of {len(observations)} observations")
    return {"observations": int(len(observations)), "identical_decisions": agree}


def load_layers(model, layers) -> None:
    """Write exported ``layers`` back into an SB3 policy: the inverse of :func:`export_layers`.

    ``layers`` are ``(w[in, out], b[out])`` pairs as :func:`export_layers` gives them (or a
    :class:`~catur.policy_model.PolicyModel`'s ``layers``). The network must have the same shape —
    the same hidden sizes — and the caller must have built it with the same activation; a
    shape mismatch raises :class:`CaturError` naming the layer. For PPO this sets the actor
    (``mlp_extractor.policy_net`` + ``action_net``; the value network keeps its fresh
    initialisation), for DQN the Q-network and its target network. Fine-tuning an exported
    model (``TrainConfig.init_from``) starts here.
    """
    policy = model.policy
    if hasattr(policy, "q_net"):  # DQN: the target network starts equal to the online one
        targets = [_linear_layers(policy.q_net.q_net.modules()), _linear_layers(policy.q_net_target.q_net.modules())]
    elif hasattr(policy, "mlp_extractor"):
        targets = [_linear_layers(policy.mlp_extractor.policy_net.modules()) + [policy.action_net]]
    else:
        raise CaturError(f"cannot load weights into a {type(model).__name__} policy")
    layers = list(layers)
    for linears in targets:
        if len(linears) != len(layers):
            raise CaturError(
                f"the model to start from has {len(layers)} layers, the network {len(linears)} "
                f"(hidden sizes must match)"
            )
        for i, (module, (w, b)) in enumerate(zip(linears, layers)):
            expected = (module.in_features, module.out_features)
            if tuple(np.shape(w)) != expected or tuple(np.shape(b)) != (module.out_features,):
                raise CaturError(
                    f"layer {i} of the model to start from has shape {tuple(np.shape(w))}, the network "
                    f"expects {expected}"
                )
            with torch.no_grad():
                module.weight.copy_(torch.as_tensor(np.asarray(w, dtype=np.float32).T))
                module.bias.copy_(torch.as_tensor(np.asarray(b, dtype=np.float32)))


def architecture_of(layers) -> tuple[int, ...]:
    """The hidden sizes (``net_arch``) of exported layers: every layer's width but the last."""
    return tuple(int(np.shape(w)[1]) for w, _ in list(layers)[:-1])

