"""securechat test suite."""
