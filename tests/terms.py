"""What the tests accept in a channel: dev chains advance time at will, so windows of a second or a
minute are fine here (a node's defaults, an hour to two weeks, are for public chains)."""

from statechannel.core.machine import Terms

TEST_TERMS = Terms(1, 10**6)
