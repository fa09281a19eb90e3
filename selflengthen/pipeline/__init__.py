"""The Self-Lengthen loop (loop) and its stages (stages/), with what watches them: progress,
status.json and the trackers (observe) and each iteration's metrics (metrics). Only the
`run` verb drives it; the other verbs use the layers below."""
