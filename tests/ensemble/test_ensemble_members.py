"""Member registry, parsing and ASE-calculator loading (fast: no uMLIP weights loaded)."""

from importlib import metadata

import pytest
from ase.calculators.emt import EMT

from uq_flows.ensemble import (
    BUILTIN_MEMBERS,
    MemberSpec,
    clear_calculator_cache,
    load_calculator,
    parse_member,
    supported_numbers,
)
from uq_flows.errors import MemberError


def test_builtin_members_are_exactly_the_offline_models():
    assert set(BUILTIN_MEMBERS) == {
        "chgnet-0.2.0",
        "chgnet-0.3.0",
        "chgnet-r2scan",
        "sevennet-0-11jul2024",
        "sevennet-0-22may2024",
        "sevennet-l3i5",
    }
    for name, spec in BUILTIN_MEMBERS.items():
        assert spec.name == name
        assert spec.functional == ("r2SCAN" if name == "chgnet-r2scan" else "PBE")
    assert {s.kind for s in BUILTIN_MEMBERS.values()} == {"chgnet", "sevennet"}
    assert BUILTIN_MEMBERS["sevennet-0-11jul2024"].model == "7net-0_11July2024"


@pytest.mark.parametrize("text", ["chgnet-0.3.0", "CHGNet-0.3.0", "  SEVENNET-L3I5 "])
def test_builtin_names_are_case_insensitive(text):
    assert parse_member(text) is BUILTIN_MEMBERS[text.strip().lower()]


def test_version_names_package_and_model():
    chgnet = metadata.version("chgnet")
    assert parse_member("chgnet-0.3.0").version == f"chgnet {chgnet} / 0.3.0"
    assert parse_member("sevennet-l3i5").version == f"sevenn {metadata.version('sevenn')} / 7net-l3i5"
    assert parse_member("ase:ase.calculators.emt:EMT").version == (
        f"ase {metadata.version('ase')} / ase.calculators.emt:EMT"
    )
    assert parse_member("ase:uqf_ensemble_calculators:NoStress").version.startswith("uqf_ensemble_calculators (unversioned)")


def test_named_specs():
    spec = parse_member("fast=chgnet-0.3.0")
    assert (spec.name, spec.kind, spec.model, spec.functional) == ("fast", "chgnet", "0.3.0", "PBE")
    spec = parse_member("emt=ase:ase.calculators.emt:EMT")
    assert (spec.name, spec.kind, spec.model, spec.functional) == ("emt", "ase", "ase.calculators.emt:EMT", None)


def test_mace_spec_resolves_the_path_and_hashes_the_file(tmp_path, monkeypatch):
    model = tmp_path / "my=model.model"  # an '=' inside the path is not a NAME= prefix
    model.write_bytes(b"not really a model")
    monkeypatch.chdir(tmp_path)
    spec = parse_member("mace:my=model.model")
    assert (spec.name, spec.kind, spec.model) == ("mace:my=model.model", "mace", str(model))
    assert spec.functional is None
    before = spec.version
    assert "mace-torch" in before and "sha256" in before
    named = parse_member(f"mine=mace:{model}")
    assert named.name == "mine" and named.model == str(model)
    model.write_bytes(b"another file")
    assert spec.version != before  # the hash follows the file's content


@pytest.mark.parametrize(
    "text",
    ["", "chgnet", "chgnet-9.9.9", "orb-v3", "mace:", "ase:", "ase:nomodule", "ase:a:b:c", "x=y=chgnet-0.3.0", "bad name=chgnet-0.3.0"],
)
def test_bad_member_texts(text):
    with pytest.raises(MemberError):
        parse_member(text)


def test_unknown_member_error_lists_builtins_and_forms():
    with pytest.raises(MemberError) as info:
        parse_member("eqV2-31-omat")
    message = str(info.value)
    for name in BUILTIN_MEMBERS:
        assert name in message
    assert "mace:PATH" in message and "ase:" in message and "NAME=SPEC" in message


def test_missing_mace_file(tmp_path):
    with pytest.raises(MemberError, match="does not exist"):
        parse_member(f"mace:{tmp_path / 'missing.model'}")


def test_builtin_name_cannot_be_reused_for_another_model():
    with pytest.raises(MemberError, match="built-in"):
        parse_member("chgnet-0.3.0=ase:ase.calculators.emt:EMT")


def test_spec_validation_and_kwargs_normalisation():
    spec = MemberSpec("s", "ase", "uqf_ensemble_calculators:ScaledEMT", None, {"scale": 2.0})
    assert spec.kwargs == (("scale", 2.0),)
    assert hash(spec) == hash(MemberSpec("s", "ase", "uqf_ensemble_calculators:ScaledEMT", None, (("scale", 2.0),)))
    assert MemberSpec.from_dict(spec.as_dict()) == spec
    with pytest.raises(MemberError):
        MemberSpec("s", "orb", "x", None)
    with pytest.raises(MemberError):
        MemberSpec("s", "chgnet", "0.3.0", "PBE+U")
    with pytest.raises(MemberError):
        MemberSpec("s", "ase", "no_colon", None)
    with pytest.raises(MemberError):
        MemberSpec("", "chgnet", "0.3.0", None)


def test_ase_member_loads_class_and_factory_and_caches():
    clear_calculator_cache()
    spec = parse_member("ase:ase.calculators.emt:EMT")
    calc = load_calculator(spec)
    assert isinstance(calc, EMT)
    assert load_calculator(spec) is calc  # cached
    assert supported_numbers(spec, calc) is None  # unknown for ASE members
    factory = load_calculator(parse_member("ase:uqf_ensemble_calculators:make_emt"))
    assert isinstance(factory, EMT) and factory is not calc
    clear_calculator_cache()
    assert load_calculator(spec) is not calc


def test_ase_member_kwargs_reach_the_constructor():
    spec = MemberSpec("scaled", "ase", "uqf_ensemble_calculators:ScaledEMT", None, (("scale", 3.0),))
    assert load_calculator(spec).scale == 3.0


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ("no_such_module_xyz:Calc", "cannot import"),
        ("ase.calculators.emt:NoSuchThing", "no attribute"),
        ("math:pi", "not a class or factory"),
        ("uqf_ensemble_calculators:not_a_calculator", "not an ASE calculator"),
    ],
)
def test_ase_member_load_errors_name_the_member(model, match):
    spec = MemberSpec("broken", "ase", model, None)
    with pytest.raises(MemberError, match=match) as info:
        load_calculator(spec)
    assert "broken" in str(info.value)


def test_constructor_exception_becomes_member_error():
    spec = MemberSpec("broken-init", "ase", "uqf_ensemble_calculators:BrokenInit", None)
    with pytest.raises(MemberError, match="broken-init") as info:
        load_calculator(spec)
    assert "OSError: weights file not found" in str(info.value)
