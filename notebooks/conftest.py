"""nbval ends each notebook's kernel with a kill; here it asks the kernel to shut down instead.

JupyterLab, nbconvert and jupyter_client's default all send a shutdown request and give the
kernel a moment to exit. A killed kernel runs no finalizer, so notebook 04's server (left
running on purpose, for the reader to chat) could not remove its temporary folder.
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Make nbval's kernel stop gracefully (it falls back to a kill after a few seconds)."""
    try:
        from nbval.kernel import RunningKernel
    except ImportError:  # nbval not installed: nothing to change
        return
    original = RunningKernel.stop

    def stop(self: Any) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)  # a shutdown request, then a wait
        del self.km

    RunningKernel.stop = stop
    config.add_cleanup(lambda: setattr(RunningKernel, "stop", original))
