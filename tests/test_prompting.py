import pytest

from selflengthen.core import prompting


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("name", ["augment", "judge", "extend", "list_item"])
def test_every_template_exists_and_renders(language, name):
    text = prompting.load_template(language, name)
    assert text.strip()
    rendered = prompting.render(text, instruction="INSTR {x}", response="RESP {y}", number=3)
    assert "{instruction}" not in rendered and "{response}" not in rendered and "{number}" not in rendered


def test_render_is_single_pass():
    assert prompting.render("[{instruction}]", instruction="{response}", response="X") == "[{response}]"


def test_unknown_language_is_rejected():
    with pytest.raises(ValueError, match="no prompt templates"):
        prompting.load_template("fr", "judge")


def test_augment_request_is_a_numbered_list_in_the_assistant_turn():
    messages, prefix = prompting.augment_request(["Write A.", "  Write B. "], "en")
    assert messages[0]["role"] == "user" and len(messages) == 1
    assert prefix == "Instruction 1: Write A.\nInstruction 2: Write B.\nInstruction 3:"
    _, zh_prefix = prompting.augment_request(["写甲。", "写乙。"], "zh")
    assert zh_prefix.endswith("指令 3：") and "指令 1： 写甲。" in zh_prefix
    assert "Instruction 4:" in prompting.augment_stops("en", 2)


def test_parse_augmented_takes_one_item():
    assert prompting.parse_augmented(" Write about owls at length.\nInstruction 4: other") == \
        "Write about owls at length."
    assert prompting.parse_augmented(' "Quoted task."  ') == "Quoted task."
    assert prompting.parse_augmented("\n") == ""


@pytest.mark.parametrize("answer,verdict", [
    ("yes", True), ("Yes.", True), (" YES, it would", True), ("是", True), ("是的，可以", True),
    ("no", False), ("No.", False), ("否", False), ("", False), ("maybe yes", False), ("不是", False),
])
def test_parse_judgement(answer, verdict):
    assert prompting.parse_judgement(answer) is verdict


def test_judge_and_extender_requests_carry_their_inputs():
    judge = prompting.judge_request("Write a saga.", "en")[0]["content"]
    assert "Write a saga." in judge and "yes or no" in judge
    ext = prompting.extender_request("Write a saga.", "Once upon a time.", "zh")[0]["content"]
    assert "Write a saga." in ext and ext.rstrip().endswith("Once upon a time.")
    assert prompting.generator_request("Write a saga.") == [{"role": "user", "content": "Write a saga."}]
