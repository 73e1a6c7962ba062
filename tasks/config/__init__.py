"""Typed checks of a composed config: the schema read from `_target_` signatures, the value types
(Range, Choices, Pattern), the rules beside them, and the check of a whole config or command."""
