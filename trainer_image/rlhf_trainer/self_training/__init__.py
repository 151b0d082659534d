"""Self-training for the `rest` stage kind (ReST, Gulcehre et al. 2023): the Grow/Improve
schedule, scored samples and the resume state.

schedule: pure (steps, thresholds, which samples are kept, which prompts a Grow step samples);
store: the scored samples and the iteration records on the volume.
"""
