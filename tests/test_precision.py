"""model.dtype=auto and train.bf16=auto: bf16 where the CPU computes it natively."""
from selflengthen.core import precision

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n"
OLD_X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_cpu_flags_read_x86_and_arm_cpuinfo():
    assert {"amx_bf16", "avx512_bf16"} <= precision.cpu_flags(X86)
    assert not precision.cpu_flags(OLD_X86) & precision.BF16_FLAGS
    assert "bf16" in precision.cpu_flags(ARM)


def test_native_bf16_from_a_cpuinfo_file(tmp_path):
    for text, native in ((X86, True), (OLD_X86, False), (ARM, True)):
        path = tmp_path / f"cpuinfo-{native}-{len(text)}"
        path.write_text(text)
        assert precision.cpu_has_native_bf16(str(path)) is native
    assert precision.cpu_has_native_bf16(str(tmp_path / "absent")) is False


def test_auto_serves_bf16_only_on_a_cpu_that_has_it_and_leaves_gpus_to_vllm():
    assert precision.serving_dtype("auto", on_gpu=False, native_bf16=True) == "bfloat16"
    assert precision.serving_dtype("auto", on_gpu=False, native_bf16=False) == "float32"
    assert precision.serving_dtype("auto", on_gpu=True, native_bf16=False) == "auto"
    assert precision.serving_dtype("float32", on_gpu=False, native_bf16=True) == "float32"


def test_train_bf16_auto_follows_the_served_dtype_on_cpus():
    assert precision.train_in_bf16("auto", cuda=True, model_dtype="float32") is True
    assert precision.train_in_bf16("auto", cuda=False, model_dtype="auto", native_bf16=True) is True
    assert precision.train_in_bf16("auto", cuda=False, model_dtype="auto", native_bf16=False) is False
    assert precision.train_in_bf16("auto", cuda=False, model_dtype="float32", native_bf16=True) is False
    assert precision.train_in_bf16("auto", cuda=False, model_dtype=None, native_bf16=True) is False
    assert precision.train_in_bf16(False, cuda=True, model_dtype="bfloat16") is False


# /proc/cpuinfo "flags" lines as those CPUs print them (shortened to the flags that matter here)
EPYC_AVX2 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx "
             "f16c fma bmi2 avx2 sha_ni clwb vaes vpclmulqdq rdpid\n")
EPYC_AVX512 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f "
               "avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni\n")
SKYLAKE_AVX512 = ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f avx512dq avx512cd avx512bw "
                  "avx512vl avx512_vnni\n")
SAPPHIRE_RAPIDS = ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 "
                   "amx_tile amx_int8\n")


def test_the_served_dtype_and_its_reason_on_literal_cpuinfo(tmp_path):
    expected = {EPYC_AVX2: ("float32", "no AVX512-BF16 or AMX"), SKYLAKE_AVX512: ("float32", "no AVX512-BF16 or AMX"),
                EPYC_AVX512: ("bfloat16", "avx512_bf16"), SAPPHIRE_RAPIDS: ("bfloat16", "amx_bf16, avx512_bf16"),
                ARM: ("bfloat16", "bf16 in")}
    for i, (text, (served, why)) in enumerate(expected.items()):
        path = tmp_path / f"cpuinfo-{i}"
        path.write_text(text)
        chosen = precision.choice("auto", on_gpu=False, cpuinfo_path=str(path))
        assert (chosen["requested"], chosen["served"]) == ("auto", served), text
        assert why in chosen["reason"] and str(path) in chosen["reason"], chosen


def test_the_reason_names_an_explicit_dtype_a_gpu_and_an_unreadable_cpuinfo(tmp_path):
    assert precision.choice("bfloat16", on_gpu=False) == {"requested": "bfloat16", "served": "bfloat16",
                                                          "reason": "model.dtype=bfloat16 names it"}
    assert precision.choice("auto", on_gpu=True)["served"] == "auto"
    unread = precision.choice("auto", on_gpu=False, cpuinfo_path=str(tmp_path / "absent"))
    assert unread["served"] == "float32" and "could not be read" in unread["reason"]
