"""Served models (issue 19): the remote reward client and server, and the OpenAI-compatible judge.

protocol: the remote reward protocol's checks and the retry schedule (pure);
reward_client: reward source type remote; reward_server: `rlhf serve-reward MODEL_DIR`;
judge_client: the RLAIF judge behind an OpenAI-compatible endpoint.
"""
