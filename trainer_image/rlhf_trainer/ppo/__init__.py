"""The project's PPO engine (TRL 1.16 has no PPO trainer): torch + transformers + peft.

core: pure PPO math; value_head: policy/value/reference over one set of weights;
rollout: sampling; engine: one PPO iteration; checkpoint/loop: training with resume.
"""
