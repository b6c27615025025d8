"""Offline checker for Pulumi YAML programs, schema-driven by the official provider SDKs."""

from .program import Checker, Diagnostic, check_program, parse_interpolation, refs_in

__all__ = ["Checker", "Diagnostic", "check_program", "parse_interpolation", "refs_in"]
