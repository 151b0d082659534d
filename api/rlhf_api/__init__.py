"""The contract between the operator and the trainer: torch-free, kopf-free, pydantic only.

The RLHFRun spec and the stage configs it composes, the status, the stage result, the volume
layout, progress events, child names and the catalogue of condition/event reasons. The
operator (`rlhf_operator`) and the trainer (`rlhf_trainer`) both import it; neither imports
the other.
"""
