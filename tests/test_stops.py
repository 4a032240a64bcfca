import os
import signal

import pytest

from fastrobust.stops import Stopped, exit_status, held, stop_on_signals


def test_sigterm_raises_stopped_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as caught, stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
    assert caught.value.signum == signal.SIGTERM and isinstance(caught.value, KeyboardInterrupt)
    assert exit_status(caught.value.signum) == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_inside_held_waits_for_the_end_of_the_block():
    finished = []
    with pytest.raises(Stopped), stop_on_signals():
        with held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            finished.append(True)  # still runs: the stop waits
    assert finished == [True]
