"""Passes: functions from IR networks (and data) to IR networks or to facts about them.

``fan_in``: limits the fan-in of populations for machines with small synapse memories (SpiNNaker).
``ring_buffers``: expected summed synaptic weight per step of every population, from firing-rate
statistics, for SpiNNaker's 16-bit ring buffers. ``synapse_matrix``: a projection as an explicit sparse
matrix. ``reset_compensation``: per-neuron reset values that make up for the overshoot a hard reset
loses (SpiNNaker). What a target's hardware computes (number formats, limits) lives in ``neurodeploy.targets``.
"""
