"""The four migration phases: phase control and audit, routing, the repair queue, shadow reads."""
