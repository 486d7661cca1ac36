"""Plugin loading: the three ways in, listing, and the errors of each way."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wavelens import PluginError
from wavelens.cli import main, plugins_document
from wavelens.host import PluginRegistry, Run, load_spec

from conftest import FIXTURE_PLUGINS, REPO

EP_PLUGIN = """
    from wavelens import Contribution, Dataset, Params, hookimpl

    class EpParams(Params):
        size: int = 3

    class EpData(Dataset):
        def __init__(self, params):
            self.params = params

        def load(self, workdir):
            return {"train": list(range(self.params.size))}

    @hookimpl
    def wavelens_datasets():
        return [Contribution("ep_data", EpParams, "from an entry point", EpData)]
"""


def test_builtin_plugins_come_from_registry_yaml():
    registry = PluginRegistry.discover()
    tones = registry.get("dataset", "tones")
    assert tones.source.type == "builtin"
    assert tones.source.location == "wavelens.plugins.toy.tones"
    assert {"tones", "tiny_cnn", "accuracy"} <= set(registry.names())


def test_entry_point_plugin_is_listed_and_usable_from_a_spec(entry_point_package, write_spec):
    entry_point_package("ep_pkg", EP_PLUGIN)
    registry = PluginRegistry.discover()
    found = registry.get("dataset", "ep_data")
    assert found.source.type == "entry_point"
    assert found.version == "1.2.3"
    assert "ep_pkg = ep_pkg (ep_pkg 1.2.3)" in found.source.location

    spec = write_spec(
        """
        spec_version: 1
        name: ep
        data: {plugin: ep_data, params: {size: 5}}
        """
    )
    directory = Run(load_spec(spec)).execute()
    stage = json.loads((directory / "stages/dataset/stage.json").read_text())
    assert stage["summary"]["splits"] == {"train": {"items": 5}}


def test_local_plugin_file_is_listed_and_usable_from_a_spec(recorder_spec, journal):
    resolved = load_spec(recorder_spec())
    probe = resolved.component("probes.0").plugin
    assert probe.source.type == "file"
    assert probe.source.location == str(FIXTURE_PLUGINS / "recorder.py")
    assert probe.plugin == "file:recorder"
    Run(resolved).execute()
    assert "probes.0 run" in journal()


def test_validate_names_the_plugin_files_it_imports(recorder_spec, capsys):
    assert main(["validate", str(recorder_spec())]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"imported the plugin file {FIXTURE_PLUGINS / 'recorder.py'}, as the spec asks" in err


def test_local_plugin_path_is_relative_to_the_spec(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.py").write_text((FIXTURE_PLUGINS / "recorder.py").read_text())
    spec = tmp_path / "sub" / "spec.yaml"
    spec.write_text("spec_version: 1\nname: rel\nplugins: [./mine.py]\n"
                    "data: {plugin: counting_data}\n")
    resolved = load_spec(spec)
    assert resolved.component("dataset").plugin.source.location == str(tmp_path / "sub" / "mine.py")


def test_an_editable_plugin_package_is_keyed_by_its_source(entry_point_package):
    site = entry_point_package("ep_editable", EP_PLUGIN, editable=True)
    first = PluginRegistry.discover().get("dataset", "ep_data").version
    assert first.startswith("1.2.3+src.")
    (site / "ep_editable.py").write_text(textwrap.dedent(EP_PLUGIN).replace("size: int = 3", "size: int = 4"))
    assert PluginRegistry.discover().get("dataset", "ep_data").version not in (first, "1.2.3")


def test_an_installed_plugin_package_is_keyed_by_its_version(entry_point_package):
    entry_point_package("ep_fixed", EP_PLUGIN)
    assert PluginRegistry.discover().get("dataset", "ep_data").version == "1.2.3"


def test_cli_lists_plugins_of_all_three_sources(entry_point_package, capsys):
    entry_point_package("ep_list", EP_PLUGIN)
    assert main(["plugins", "--json", "--file", str(FIXTURE_PLUGINS / "recorder.py")]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert listed["tones"]["source"]["type"] == "builtin"
    assert listed["ep_data"]["source"]["type"] == "entry_point"
    assert listed["mean_activation"]["source"]["type"] == "file"
    assert listed["mean_activation"]["kind"] == "probe"


def test_duplicate_contribution_name_is_refused(tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text(textwrap.dedent(EP_PLUGIN).replace('"ep_data"', '"tones"'))
    with pytest.raises(PluginError) as caught:
        PluginRegistry.discover(files=[clash])
    message = str(caught.value)
    assert "duplicate plugin name 'tones'" in message
    assert str(clash) in message and "wavelens.plugins.toy.tones" in message


def test_duplicate_plugin_file_name_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "same.py").write_text("x = 1\n")
    with pytest.raises(PluginError, match="'file:same' .* is already taken"):
        PluginRegistry.discover(files=[tmp_path / "a/same.py", tmp_path / "b/same.py"])


def test_hook_without_a_specification_is_refused(tmp_path):
    bad = tmp_path / "typo_hook.py"
    bad.write_text(
        "from wavelens import hookimpl\n\n@hookimpl\ndef wavelens_model():\n    return []\n"
    )
    with pytest.raises(PluginError) as caught:
        PluginRegistry.discover(files=[bad])
    message = str(caught.value)
    assert "file:typo_hook" in message and str(bad) in message
    assert "wavelens_model" in message and "wavelens_models" in message


def test_import_failure_names_the_plugin_and_how_to_disable_it(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(PluginError) as caught:
        PluginRegistry.discover(files=[broken])
    message = str(caught.value)
    assert "file:broken" in message and str(broken) in message
    assert "No module named 'not_a_real_module_xyz'" in message
    assert "WAVELENS_DISABLE_PLUGINS" in message


def test_entry_point_import_failure_names_the_distribution(entry_point_package):
    entry_point_package("ep_broken", "raise RuntimeError('kaput')\n")
    with pytest.raises(PluginError, match=r"'ep_broken' from entry point .*ep_broken 1\.2\.3.*kaput"):
        PluginRegistry.discover()


def test_params_that_allow_unknown_fields_are_refused(tmp_path):
    lax = tmp_path / "lax.py"
    lax.write_text(
        textwrap.dedent(EP_PLUGIN)
        .replace("from wavelens import", "from pydantic import BaseModel\nfrom wavelens import")
        .replace("class EpParams(Params):", "class EpParams(BaseModel):")
    )
    with pytest.raises(PluginError, match="must forbid unknown fields"):
        PluginRegistry.discover(files=[lax])


def test_params_that_allow_infinite_numbers_are_refused(tmp_path):
    lax = tmp_path / "lax.py"
    lax.write_text(
        textwrap.dedent(EP_PLUGIN)
        .replace("from wavelens import", "from pydantic import BaseModel, ConfigDict\nfrom wavelens import")
        .replace("class EpParams(Params):",
                 "class EpParams(BaseModel):\n    model_config = ConfigDict(extra='forbid')")
    )
    with pytest.raises(PluginError, match="must refuse NaN and infinite numbers"):
        PluginRegistry.discover(files=[lax])


def _float_fields(params) -> list[str]:
    return [name for name, field in params.model_fields.items() if "float" in repr(field.annotation)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_every_float_parameter_of_every_builtin_plugin_refuses_non_finite_numbers(bad):
    from pydantic import ValidationError

    registry = PluginRegistry.discover()
    checked = 0
    for item in registry.all():
        for name in _float_fields(item.contribution.params):
            refused = False
            for value in (bad, [bad], [bad, bad], [[bad, bad]]):  # a float, a list or a pair of them
                try:
                    item.contribution.params.model_validate({name: value})
                except ValidationError as exc:
                    refused = any(e["type"] == "finite_number" and e["loc"][0] == name for e in exc.errors())
                if refused:
                    break
            assert refused, f"{item.contribution.name}.{name} accepts {bad}"
            checked += 1
    assert checked > 40  # the built-in plugins have many float parameters


def test_registry_must_list_every_builtin_contribution(tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text("plugins:\n  - {name: tones, kind: dataset, module: wavelens.plugins.toy.tiny_cnn}\n")
    found = PluginRegistry.discover(registry_file=registry)  # reads the list, imports nothing
    with pytest.raises(PluginError, match="'tiny_cnn', which registry.yaml does not list"):
        found.find("tones")


def test_registry_entry_without_contribution_is_refused(tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "plugins:\n"
        "  - {name: tones, kind: dataset, module: wavelens.plugins.toy.tones}\n"
        "  - {name: ghost, kind: dataset, module: wavelens.plugins.toy.tones}\n"
    )
    with pytest.raises(PluginError, match="lists the dataset 'ghost'"):
        PluginRegistry.discover(registry_file=registry).get("dataset", "tones")


def test_disable_by_environment_variable(monkeypatch):
    monkeypatch.setenv("WAVELENS_DISABLE_PLUGINS", "tones, accuracy")
    names = PluginRegistry.discover().names()
    assert "tones" not in names and "accuracy" not in names and "tiny_cnn" in names


def test_disabled_builtin_module_is_not_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "wavelens.plugins.toy.tones", raising=False)
    PluginRegistry.discover(disabled={"wavelens.plugins.toy.tones"})
    assert "wavelens.plugins.toy.tones" not in sys.modules


def test_disable_by_cli_flag_and_spec_using_it_explains(write_spec, capsys):
    spec = write_spec("spec_version: 1\nname: d\ndata: {plugin: tones}\n")
    assert main(["--disable", "tones", "validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset plugin 'tones'" in err and "disabled" in err


def test_disabling_an_entry_point_skips_its_import(entry_point_package):
    entry_point_package("ep_never", "raise RuntimeError('must not be imported')\n")
    assert "ep_data" not in PluginRegistry.discover(disabled={"ep_never"}).names()


def test_plugins_json_is_stable_and_matches_the_documented_shape(capsys):
    main(["plugins", "--json"])
    first = capsys.readouterr().out
    main(["plugins", "--json"])
    assert capsys.readouterr().out == first
    document = json.loads(first)
    assert set(document) == {"format", "format_version", "plugins", "commands", "extension_points"}
    assert [c["name"] for c in document["commands"]] == ["generate", "enhance", "evaluate"]
    (point,) = document["extension_points"]
    assert set(point) == {"name", "help", "group", "plugin", "entries"} and point["name"] == "gamm_backend"
    assert all(set(entry) == {"name", "target", "source"} for entry in point["entries"])
    for entry in document["commands"]:
        assert set(entry) == {"name", "help", "plugin", "source"}
        assert set(entry["source"]) == {"type", "location"}
    assert document["format"] == "wavelens-plugins" and document["format_version"] == 1
    for entry in document["plugins"]:
        assert set(entry) == {"name", "kind", "description", "plugin", "source", "version",
                              "params_schema"}
        assert set(entry["source"]) == {"type", "location"}
    kinds_order = ["dataset", "model", "probe", "statistic", "metric"]
    keys = [(kinds_order.index(p["kind"]), p["name"]) for p in document["plugins"]]
    assert keys == sorted(keys)
    docs = (REPO / "docs" / "specs.md").read_text()
    for field in ("format_version", "params_schema", "source.type", "source.location"):
        assert f"`{field}`" in docs


def test_plugins_json_document_carries_the_params_schema():
    document = plugins_document(PluginRegistry.discover())
    tiny = next(p for p in document["plugins"] if p["name"] == "tiny_cnn")
    assert tiny["params_schema"]["properties"]["learning_rate"]["default"] == 1e-3


def test_plugins_table_lists_kind_name_params_source_and_version(capsys, monkeypatch):
    from wavelens import console

    monkeypatch.setattr(console, "width", 200)  # one row per plugin, nothing folded
    assert main(["plugins"]) == 0
    out = capsys.readouterr().err
    for text in ("tiny_cnn", "model", "learning_rate", "wavelens.plugins.toy.tiny_cnn", "0.1.0",
                 "commands the plugins add", "wavelens.plugins.ciwgan.commands",
                 "what other packages can add to the plugins", "gamm_backend", "wavelens.gamm_backends"):
        assert text in out


def test_plugins_show_prints_parameters_with_defaults(capsys):
    assert main(["plugins", "show", "tiny_cnn"]) == 0
    out = capsys.readouterr().err
    assert "learning_rate" in out and "0.001" in out and "Adam learning rate" in out


def test_plugins_show_unknown_name_suggests(capsys):
    assert main(["plugins", "show", "tiny_cn"]) == 2
    assert "did you mean tiny_cnn" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("wavelens")
    result = subprocess.run(
        [str(script), "plugins", "--json"],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(result.stdout)["format"] == "wavelens-plugins"


# -- commands plugins add (wavelens_commands) ----------------------------------------

EP_COMMAND = """
    from pathlib import Path

    from wavelens import Command, hookimpl, int_between

    def add_arguments(parser):
        parser.add_argument("folder", type=Path)
        parser.add_argument("--times", type=int_between(1, 3), default=1)

    def run(args, ctx):
        kinds = sorted({c.kind for c in ctx.registry.all()})
        (args.folder / "echo.txt").write_text(f"{args.times} {','.join(kinds)} {sorted(ctx.disabled)}")
        return 0

    @hookimpl
    def wavelens_commands():
        return [Command("ep-echo", "write what the command saw", add_arguments, run)]
"""


def test_the_built_in_commands_come_from_plugins_and_help_lists_them(capsys):
    registry = PluginRegistry.discover()
    sources = {c.name: c.source.location for c in registry.commands()}
    assert sources == {"generate": "wavelens.plugins.ciwgan.commands",
                       "enhance": "wavelens.plugins.noisy_speech.commands",
                       "evaluate": "wavelens.plugins.metrics.commands"}
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listing = capsys.readouterr().out
    for name in ("plugins", "validate", "run", "data", "probe", "stats", "report",
                 "generate", "enhance", "evaluate"):
        assert f"    {name}" in listing


def test_an_installed_plugins_command_appears_and_runs(entry_point_package, tmp_path, capsys):
    entry_point_package("ep_echo", EP_COMMAND)
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert "ep-echo" in listing and "write what the command saw" in listing
    assert main(["--disable", "tones", "ep-echo", str(tmp_path), "--times", "2"]) == 0
    times, kinds, disabled = (tmp_path / "echo.txt").read_text().split(" ", 2)
    assert times == "2" and kinds == "dataset,metric,model,probe,statistic" and "tones" in disabled
    with pytest.raises(SystemExit) as exit_:
        main(["ep-echo", str(tmp_path), "--times", "9"])  # its own argument types apply
    assert exit_.value.code == 2
    assert "expected 1 to 3, not 9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--disable", "ep_echo", "ep-echo", str(tmp_path)])  # disabled: no such command
    assert "invalid choice: 'ep-echo'" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "message"), [
    ("run", "one of the core's"),
    ("Echo", "must be lowercase letters, digits and hyphens"),
    ("generate", "two plugins add the command 'generate'"),
])
def test_a_command_that_cannot_be_offered_is_refused_with_its_source(entry_point_package, name, message):
    entry_point_package("ep_bad_command", EP_COMMAND.replace('"ep-echo"', repr(name)))
    with pytest.raises(PluginError, match=message) as error:
        PluginRegistry.discover()
    assert "ep_bad_command" in str(error.value)


def test_a_built_in_command_must_be_listed_in_the_registry(tmp_path):
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text("plugins:\n  - {name: generate, kind: command, "
                             "module: wavelens.plugins.ciwgan.commands}\n")
    assert [c.name for c in PluginRegistry.discover(registry_file=registry_file,
                                                      entry_points=False).commands()] == ["generate"]
    registry_file.write_text("plugins:\n  - {name: enhance, kind: command, "
                             "module: wavelens.plugins.ciwgan.commands}\n")
    with pytest.raises(PluginError, match="does not list as a command of wavelens.plugins.ciwgan.commands"):
        PluginRegistry.discover(registry_file=registry_file, entry_points=False).commands()


def test_when_a_plugin_fails_to_load_core_commands_still_say_so_and_plugin_commands_stop(
        entry_point_package, tmp_path, capsys):
    entry_point_package("ep_broken_cmd", "raise RuntimeError('kaput')\n")
    assert main(["plugins"]) == 2
    assert "kaput" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), "--code", "0"]) == 2
    assert "kaput" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    captured = capsys.readouterr()
    assert "    validate" in captured.out and "    generate" not in captured.out
    assert "their commands are not listed" in captured.err and "kaput" in captured.err


# -- extension points (wavelens_extension_points) -----------------------------------------

EP_POINT = """
    from wavelens import ExtensionPoint, hookimpl

    READERS = ExtensionPoint("corpus_reader", "ep_point.readers",
                             {"textgrid": "collections:OrderedDict"},
                             help="how a dataset reads alignments", label="corpus reader")

    @hookimpl
    def wavelens_extension_points():
        return [READERS]
"""


def test_a_plugins_extension_point_lists_loads_and_names_what_is_known(entry_point_package):
    import collections

    from wavelens import WavelensError
    from wavelens.cli import plugins_document

    entry_point_package("ep_point", EP_POINT)
    registry = PluginRegistry.discover()
    (point,) = [p for p in registry.extension_points() if p.name == "corpus_reader"]
    assert point.plugin == "ep_point" and point.point.names() == ["textgrid"]
    assert point.point.load("textgrid") is collections.OrderedDict
    with pytest.raises(WavelensError, match=r"no corpus reader 'praat'; known: textgrid \(others register "
                                            r"under the entry-point group ep_point.readers\)"):
        point.point.load("praat")
    listed = [p for p in plugins_document(registry)["extension_points"] if p["name"] == "corpus_reader"]
    assert listed[0]["entries"] == [{"name": "textgrid", "target": "collections:OrderedDict",
                                     "source": "builtin"}]


@pytest.mark.parametrize(("text", "message"), [
    ('"Corpus Reader"', "must be lowercase letters, digits and underscores"),
    ('"gamm_backend"', "two plugins declare the extension point 'gamm_backend'"),
])
def test_an_extension_point_that_cannot_be_offered_is_refused_with_its_source(entry_point_package,
                                                                              text, message):
    entry_point_package("ep_bad_point", EP_POINT.replace('"corpus_reader"', text))
    with pytest.raises(PluginError, match=message) as error:
        PluginRegistry.discover()
    assert "ep_bad_point" in str(error.value)


HEAVY = ("torch", "torchaudio", "numpy", "scipy", "pandas", "matplotlib", "pesq", "pystoi")


def _imported_after(code: str) -> dict:
    """Which heavy libraries and built-in plugin modules a fresh interpreter holds
    after running ``code``."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps({{'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules),"
             "'plugins': sorted(m for m in sys.modules if m.startswith('wavelens.plugins.'))}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_discovery_imports_no_plugin_module_and_nothing_heavy():
    found = _imported_after("from wavelens.host import PluginRegistry\n"
                            "r = PluginRegistry.discover()\nassert 'ciwgan' in r.names('model')")
    assert found == {"heavy": [], "plugins": []}


def test_the_command_line_starts_without_torch_numpy_or_the_plugins_that_add_no_command():
    found = _imported_after("import contextlib, io\nfrom wavelens.cli import main\n"
                            "with contextlib.redirect_stdout(io.StringIO()), "
                            "contextlib.suppress(SystemExit):\n    main(['--help'])")
    assert found["heavy"] == []
    assert set(found["plugins"]) == {f"wavelens.plugins.{package}{module}"
                                     for package in ("ciwgan", "noisy_speech", "metrics")
                                     for module in ("", ".commands")}


def test_looking_up_a_contribution_imports_its_module_only():
    found = _imported_after("from wavelens.host import PluginRegistry\n"
                            "PluginRegistry.discover().get('dataset', 'tones')")
    assert found["plugins"] == ["wavelens.plugins.toy", "wavelens.plugins.toy.tones"]


def test_an_entry_point_cannot_take_the_name_of_a_built_in_not_imported_yet(entry_point_package):
    entry_point_package("ep_clash", EP_PLUGIN.replace('"ep_data"', '"ciwgan"'))
    with pytest.raises(PluginError, match="duplicate plugin name 'ciwgan'.*wavelens.plugins.ciwgan.model"):
        PluginRegistry.discover()
