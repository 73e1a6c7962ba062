"""Typed checks of a composed config: the schema read from `_target_` signatures and their annotations
(types.py: Range, Choices, Pattern, KeywordsOf), the rules of library signatures (rules.py), what method
packages register through entry points (registry.py), and the check of a whole config or command."""
