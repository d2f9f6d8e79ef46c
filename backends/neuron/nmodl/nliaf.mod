COMMENT
Exact discrete-time integrate-and-fire neuron of neurodeploy (docs/semantics.md, "Neuron model").

Step k (k = 1, 2, ...) is evaluated by a self-event at t = k * period - offset. With period = 1 ms, offset =
0.25 ms and a synaptic delay of d - 0.5 ms a spike emitted at step k arrives between the updates of steps
k + d - 1 and k + d: exactly d steps of delay, with no two events at the same time.

general = 0 (the non-leaky IF neuron of converted networks): synaptic events add their weight to the
membrane vm when they arrive; the step event adds the bias (from step 1) and the drive (a per-item constant
input current, from step drive_start), then fires if vm >= theta and resets by subtracting theta
(reset_zero = 0) or to v_reset (reset_zero = 1).

general = 1 (leak, synaptic current, delayed reset): synaptic events are summed in inbuf; the step event
takes the step's input x = inbuf + bias (+ drive), then
    isyn = syn_decay * isyn + x,  x = isyn        (has_syn = 1 only)
    vm = decay * vm + leak_drive + x
    vm = vm - theta                               (reset_next = 1 and a spike in the step before)
and fires if vm >= theta: reset_next = 1 defers the subtraction to the next step, else the reset above.
ENDCOMMENT

NEURON {
    ARTIFICIAL_CELL NLIAF
    RANGE vm, v0, theta, bias, drive, drive_start, reset_zero, period, offset
    RANGE general, decay, leak_drive, has_syn, syn_decay, v_reset, reset_next
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
    general = 0
    decay = 1
    leak_drive = 0
    has_syn = 0
    syn_decay = 0
    v_reset = 0
    reset_next = 0
}

ASSIGNED {
    vm
    nsteps
    isyn
    inbuf
    pending
}

INITIAL {
    vm = v0
    nsteps = 0
    isyn = 0
    inbuf = 0
    pending = 0
    net_send(period - offset, 1)
}

NET_RECEIVE (w) {
    LOCAL x
    if (flag == 0) {
        if (general) {
            inbuf = inbuf + w
        } else {
            vm = vm + w
        }
    } else {
        nsteps = nsteps + 1
        if (general) {
            x = inbuf + bias
            inbuf = 0
            if (nsteps >= drive_start) {
                x = x + drive
            }
            if (has_syn) {
                isyn = syn_decay * isyn + x
                x = isyn
            }
            vm = decay * vm + leak_drive + x
            if (pending) {
                vm = vm - theta
                pending = 0
            }
        } else {
            vm = vm + bias
            if (nsteps >= drive_start) {
                vm = vm + drive
            }
        }
        if (vm >= theta) {
            if (reset_next) {
                pending = 1
            } else if (reset_zero) {
                vm = v_reset
            } else {
                vm = vm - theta
            }
            net_event(t)
        }
        net_send(period, 1)
    }
}
