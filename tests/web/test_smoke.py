from tests.support.stepup import Stepup


def test_whole_loop_smoke(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser)
    token = stepup.token(query["code"][0], verifier)
    assert token.status_code == 200, token.text
    elevated = token.json()["access_token"]
    assert stepup.introspect(elevated).json()["active"] is True
    assert stepup.revoke(elevated).status_code == 200
    assert stepup.introspect(elevated).json() == {"active": False}
