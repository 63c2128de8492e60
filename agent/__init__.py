"""giter-agent: a GitOps edge agent for Raspberry Pi-class boards.

Signed specs arrive as git bundles (network, USB stick, serial cable); the agent
verifies every commit, applies the resources to the device, and reports status as
its own signed commits. See docs/ and ../DESIGN for the layer map.
"""

__version__ = "0.1.0"
