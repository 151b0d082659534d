"""RLAIF: the AI labeller (judge prompts, both-order preferences) and the quickstart's builtin judge.

labels: pure (prompt formatting, pairing, averaging the two orders, agreement with ground truth);
judge: the judge model's probabilities of the two choices; builtin_judge: builtin:arithmetic-judge.
"""
