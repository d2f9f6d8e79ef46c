"""Passes: functions from IR networks (and data) to IR networks or to facts about them.

``fan_in``: limits the fan-in of populations for machines with small synapse memories (SpiNNaker).
``ring_buffers``: expected summed synaptic weight per step of every population, from firing-rate
statistics, for SpiNNaker's 16-bit ring buffers. ``fixed_point``: SpiNNaker's number formats (S16.15,
ring-buffer weights, the IF_curr_delta cell constants), shared by the spinnaker backend and the
reference simulator's spinnaker profile. ``synapse_matrix``: a projection as an explicit sparse matrix.
"""
