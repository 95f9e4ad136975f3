from reflectrl.cpu import cpu_flags, cpu_has_amx, cpu_has_bf16_units, cpu_model

ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx512f amx_tile amx_bf16 amx_int8\n"
# "bugs" lines list words too; only flag lines count
SKYLAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\nbugs\t\t: bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_bf16_units_are_read_from_flag_lines_of_each_architecture():
    assert cpu_has_bf16_units(ZEN4) and cpu_has_bf16_units(SAPPHIRE_RAPIDS) and cpu_has_bf16_units(GRAVITON3)
    assert not cpu_has_bf16_units(SKYLAKE) and not cpu_has_bf16_units("")
    assert "bf16" not in cpu_flags(SKYLAKE) and {"sve", "bf16"} <= cpu_flags(GRAVITON3)


def test_amx_only_on_cpus_with_tiles():
    assert cpu_has_amx(SAPPHIRE_RAPIDS)
    assert not cpu_has_amx(ZEN4) and not cpu_has_amx(GRAVITON3) and not cpu_has_amx("")


def test_model_name_or_a_fallback():
    assert cpu_model(ZEN4) == "AMD EPYC 9R14" and cpu_model(SAPPHIRE_RAPIDS) == "Intel(R) Xeon(R) Platinum 8488C"
    assert cpu_model(GRAVITON3)
