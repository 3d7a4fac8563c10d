"""Test helpers shared by the unit, component and e2e tiers."""
