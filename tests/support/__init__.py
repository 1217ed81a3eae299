"""Helpers shared by test packages: throwaway servers and the like."""
