"""Test-wide set-up: the generated protobuf stubs are importable in every test and support module."""

import protos

protos.add_generated_path()
