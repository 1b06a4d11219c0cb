"""``hubbub control rate-limit TASK RATE``: the fleet-wide override lands in the result store,
where every worker reads it; "none" clears it; a bad rate is one line and exit status 1."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from hubbub import Hub
from hubbub.cli import main


def rates(url: str) -> dict[str, str]:
    hub = Hub(url)
    try:
        async def read() -> dict[str, str]:
            results = hub.open_results()
            assert results is not None
            await results.connect()
            try:
                return await results.limits().rates()
            finally:
                await results.close()
        return hub.bridge.run(read())
    finally:
        hub.close()


def test_rate_limit_is_kept_for_the_fleet_and_cleared_with_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rate.db'}"
    done = CliRunner().invoke(main, ["control", "rate-limit", "shop.charge", "20/m",
                                     "--broker", url])
    assert done.exit_code == 0, done.output
    assert "shop.charge: rate limit 20/m for the whole fleet" in done.output
    assert rates(url) == {"shop.charge": "20/m"}
    cleared = CliRunner().invoke(main, ["control", "rate-limit", "shop.charge", "none",
                                        "--broker", url])
    assert cleared.exit_code == 0, cleared.output
    assert rates(url) == {}


def test_a_bad_rate_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rate.db'}"
    done = CliRunner().invoke(main, ["control", "rate-limit", "shop.charge", "fast",
                                     "--broker", url])
    assert done.exit_code == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error:")
    assert "fast" in line
    assert rates(url) == {}
