"""What one kind of hardware is: number formats, limits, cell parameters and energy figures.

A target module is read by every part that must compute what that hardware computes: the backend that
deploys to it and the reference simulator's profile that predicts it. ``spinnaker`` is the only target
with its own arithmetic so far.
"""
