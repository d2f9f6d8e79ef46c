COMMENT
Exact discrete-time non-leaky integrate-and-fire neuron (neurodeploy NL-IAF, DESIGN section 4).

Step k (k = 1, 2, ...) is evaluated by a self-event at t = k * period - offset. Synaptic events add their
weight to the membrane vm when they arrive; the step event adds the bias (from step 1) and the drive (a per-item
constant input current, from step drive_start), then fires if vm >= theta and resets by subtracting
the theta (reset_zero = 0) or to zero (reset_zero = 1). With period = 1 ms, offset = 0.25 ms and a
synaptic delay of 0.5 ms a spike emitted at step k arrives between the updates of steps k and k + 1:
exactly one step of delay, with no two events at the same time.
ENDCOMMENT

NEURON {
    ARTIFICIAL_CELL NLIAF
    RANGE vm, v0, theta, bias, drive, drive_start, reset_zero, period, offset
}

PARAMETER {
    v0 = 0
    theta = 1
    bias = 0
    drive = 0
    drive_start = 1
    reset_zero = 0
    period = 1 (ms)
    offset = 0.25 (ms)
}

ASSIGNED {
    vm
    nsteps
}

INITIAL {
    vm = v0
    nsteps = 0
    net_send(period - offset, 1)
}

NET_RECEIVE (w) {
    if (flag == 0) {
        vm = vm + w
    } else {
        nsteps = nsteps + 1
        vm = vm + bias
        if (nsteps >= drive_start) {
            vm = vm + drive
        }
        if (vm >= theta) {
            if (reset_zero) {
                vm = 0
            } else {
                vm = vm - theta
            }
            net_event(t)
        }
        net_send(period, 1)
    }
}
