"""The read API serves every domain: the conversations fixtures are needed here too."""

from tests.conversations.conftest import conv_defs, conv_tables, instance  # noqa: F401
