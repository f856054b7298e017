"""Brush and eraser strokes in the annotation session: painted over the model's mask, kept through later
prompts, part of undo / redo and of the prompt log, so that "Edit" replays an object exactly."""
import numpy as np
import pytest

from iseg_core import load_model
from iseg_core.errors import PromptError
from iseg_core.geometry import DisplayFrame
from iseg_core.prompts import Click, Stroke, prompt_from_dict, prompt_to_dict
from iseg_core.session import SessionManager


def _disc(shape, x, y, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 <= r * r


def test_a_stroke_paints_round_discs_and_lines_and_erases():
    m = np.zeros((40, 60), bool)
    Stroke([(10.5, 20.5)], 4).paint(m)
    assert m.sum() == _disc(m.shape, 10, 20, 4).sum() and m[20, 10] and not m[20, 15]
    Stroke([(10.5, 20.5), (50.5, 20.5)], 2).paint(m)
    assert m[19:22, 10:51].all() and not m[24, 30]  # a line 2 px either side of the path
    Stroke([(30.5, 20.5)], 3, erase=True).paint(m)
    assert not m[20, 30] and m[20, 40]
    half = np.zeros((20, 30), bool)  # the same stroke on a half-size mask: half the radius
    Stroke([(10.5, 20.5)], 4).paint(half, (0.5, 0.5))
    assert half[10, 5] and half.sum() == _disc(half.shape, 5, 10, 2).sum()
    for bad in (0, -1, float("nan")):
        with pytest.raises(PromptError, match="radius"):
            Stroke([(1, 1)], bad)
    d = prompt_to_dict(Stroke([(1, 2), (3, 4)], 5.5, erase=True))
    assert d == {"type": "eraser", "points": [[1.0, 2.0], [3.0, 4.0]], "radius": 5.5}
    assert prompt_from_dict(d) == Stroke([(1, 2), (3, 4)], 5.5, True)


@pytest.fixture
def session(photo):
    big = np.ascontiguousarray(np.repeat(np.repeat(photo, 3, axis=0), 3, axis=1))  # 963 x 1443: a display frame
    s = SessionManager(lambda: load_model("classical")).session("a")
    s.open_image(big, display=DisplayFrame.fit(big.shape[:2], 1024))
    return s


def test_strokes_win_over_later_prompts_and_undo_and_replay_exactly(session):
    s = session
    h, w = s.image.shape[:2]
    s.add(Click(700, 450))
    model_only = s.full_mask()
    paint = Stroke([(100, 100), (300, 120)], 30)  # far from the object: forced in
    erase = Stroke([(700, 450)], 25, erase=True)  # on the clicked object: forced out
    s.add(paint)
    s.add(erase)
    assert s.mask.shape == s.display.display_size
    full = s.full_mask()
    assert full.shape == (h, w) and full[110, 200] and not full[450, 700] and not model_only[110, 200]
    s.add(Click(900, 600))  # the model runs again; the strokes still win
    after = s.full_mask()
    assert after[110, 200] and not after[450, 700]
    assert s.undo() and s.undo()  # the click, then the eraser
    assert s.full_mask()[450, 700] == model_only[450, 700] and s.full_mask()[110, 200]
    assert s.redo() and not s.full_mask()[450, 700]
    s.redo()
    s.set_threshold(1.0)  # a tighter model mask, the strokes still on it
    assert s.full_mask()[110, 200] and not s.full_mask()[450, 700]
    obj = s.finish_object("thing")
    assert [p["type"] for p in obj.prompts] == ["click", "brush", "eraser", "click"]
    s.edit_object(0)  # the log replays to the same mask, pixel for pixel
    assert np.array_equal(s.full_mask(), obj.mask)
    again = s.finish_object("thing")
    assert np.array_equal(again.mask, obj.mask) and again.prompts == obj.prompts


def test_an_object_without_model_prompts_is_edited_from_its_stored_mask(session):
    s = session
    h, w = s.image.shape[:2]
    imported = np.zeros((h, w), bool)
    imported[100:300, 200:500] = True  # e.g. from a COCO import: no prompt log
    from iseg_core.session import FinishedObject

    s.objects.append(FinishedObject(imported, "car", [], 0.0, stored_id=7))
    s.edit_object(0)
    assert s.mask is not None and s.mask.any() and np.array_equal(s.full_mask(), imported)
    s.add(Stroke([(200, 100)], 20, erase=True))  # a bite out of its corner
    obj = s.finish_object("car")
    assert obj.stored_id == 7 and not obj.mask[100, 200] and obj.mask[200, 300]
    assert (imported & ~obj.mask).sum() > 300 and not (obj.mask & ~imported).any()
    s.edit_object(0)  # stroke-only log: replayed onto the stored mask, nothing changes
    assert np.array_equal(s.full_mask(), obj.mask)
    with pytest.raises(Exception, match="click on it first"):
        s.zoom_in()  # only the brush so far: nothing for the model to zoom on
