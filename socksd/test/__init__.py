"""socksd's tests."""
