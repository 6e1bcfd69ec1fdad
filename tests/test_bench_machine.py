"""What a benchmark report says about the CPU it ran on (``bench.common.cpu_description``)."""

from __future__ import annotations

from bench.common import cpu_description

_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 167
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 1
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512_vnni amx_int8 amx_tile

processor\t: 1
model name\t: Some Other Name
flags\t\t: fpu sse2
"""


def test_names_model_numbers_and_the_vector_features_onnx_runtime_uses() -> None:
    assert cpu_description(_CPUINFO) == (
        "Intel(R) Xeon(R) Processor (family 6, model 167, stepping 1; "
        "avx2 fma avx512f avx512_vnni amx_int8)"
    )


def test_a_cpu_without_avx2_says_so() -> None:
    text = "model name\t: Old CPU\ncpu family\t: 6\nflags\t\t: fpu sse2 sse4_2\n"
    assert cpu_description(text) == "Old CPU (family 6; no AVX2)"


def test_missing_fields_leave_what_is_known() -> None:
    assert cpu_description("model name\t: ARM thing\n") == "ARM thing"
    assert cpu_description("") == "unknown"
