"""The web page in a real browser: Debian's Chromium driven by Playwright, against the
service on a real PostgreSQL. Screenshots land in tests/artifacts/ (ignored by git)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from conversations.store import Store
from devtools.serving import serve
from tests.support.service import TOKEN, MigratedDatabase, make_settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def live(clean_db: MigratedDatabase) -> Iterator[str]:
    with serve(make_settings(clean_db.app)) as url:
        yield url


@pytest.fixture
def page(browser: Browser, live: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def enter_token(page: Page, token: str = TOKEN) -> None:
    expect(page.get_by_role("dialog", name="API token")).to_be_visible()
    page.get_by_label("Token", exact=True).fill(token)
    page.get_by_role("button", name="Continue").click()


def send(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


def test_create_open_append_search_and_delete(page: Page, live: str) -> None:
    # Given the page and an empty store
    page.goto(live)
    enter_token(page)
    expect(page.get_by_text("No conversations yet")).to_be_visible()
    shot(page, "01-empty")
    # When a new conversation is started, Then its title comes from the first message
    page.get_by_role("button", name="New conversation").click()
    send(page, "How do I rotate RDS credentials?")
    expect(page.get_by_role("heading", name="How do I rotate RDS credentials?")).to_be_visible()
    sidebar = page.get_by_role("list", name="Recent conversations")
    expect(sidebar.get_by_role("button")).to_have_count(1)
    expect(sidebar.get_by_role("button").first).to_contain_text("1 message")
    # When another message is appended, Then it shows with its role and the count follows
    page.get_by_label("as").select_option("assistant")
    send(page, "Use Secrets Manager rotation with a multi-user strategy.")
    messages = page.get_by_role("list", name="Messages")
    expect(messages.get_by_role("listitem")).to_have_count(2)
    expect(messages.get_by_role("listitem").last).to_contain_text("assistant")
    expect(sidebar.get_by_role("button").first).to_contain_text("2 messages")
    shot(page, "02-conversation")
    # When searching, Then the hit links to its conversation
    page.get_by_label("Search messages").fill("multi-user")
    page.get_by_role("button", name="Search", exact=True).click()
    results = page.get_by_role("region", name="Search results")
    hits = results.get_by_role("list").get_by_role("button")
    expect(hits).to_have_count(1)
    expect(results.locator("mark").first).to_have_text(re.compile("multi", re.I))
    shot(page, "03-search")
    page.get_by_role("button", name="New conversation").click()
    hits.first.click()
    expect(page.get_by_role("heading", name="How do I rotate RDS credentials?")).to_be_visible()
    # When deleting, Then it asks first, and cancelling keeps it
    page.get_by_role("button", name="Delete", exact=True).click()
    confirm = page.get_by_role("dialog", name="Delete this conversation?")
    expect(confirm).to_be_visible()
    shot(page, "04-confirm-delete")
    confirm.get_by_role("button", name="Cancel").click()
    expect(sidebar.get_by_role("button")).to_have_count(1)
    page.get_by_role("button", name="Delete", exact=True).click()
    confirm.get_by_role("button", name="Delete").click()
    expect(sidebar.get_by_role("button")).to_have_count(0)
    expect(page.get_by_text("No conversations yet")).to_be_visible()


def test_script_in_a_message_is_shown_as_text(page: Page, live: str, store: Store) -> None:
    store.create_conversation(conversation_id="xss", title="<img src=x onerror=alert(1)>")
    from conversations.models import NewMessage

    store.append_messages("xss", [NewMessage("user", "<script>window.pwned = true</script><b>bold?</b>")])
    page.goto(live)
    enter_token(page)
    page.get_by_role("button", name="<img src=x onerror=alert(1)>").click()
    content = page.locator(".message .content").first
    expect(content).to_have_text("<script>window.pwned = true</script><b>bold?</b>")
    assert page.evaluate("window.pwned === undefined")
    assert page.locator(".message script, .message b, img").count() == 0
    page.get_by_label("Search messages").fill("bold")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#search-list mark").first).to_be_visible()
    assert page.locator("#search-list script").count() == 0
    shot(page, "05-script-as-text")


def test_wrong_token_asks_again(page: Page, live: str) -> None:
    page.goto(live)
    enter_token(page, "not-the-right-token-at-all")
    dialog = page.get_by_role("dialog", name="API token")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("The token was refused")
    shot(page, "06-token-refused")
    enter_token(page)
    expect(page.get_by_text("No conversations yet")).to_be_visible()


def test_database_unavailable_says_so_and_retries(browser: Browser, clean_db: MigratedDatabase) -> None:
    dead = " ".join(p if not p.startswith("port=") else "port=9" for p in clean_db.app.split())
    with serve(make_settings(dead, pool_min_size=0, pool_timeout=0.5)) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        enter_token(page)
        banner = page.get_by_role("alert")
        expect(banner).to_contain_text("The database is unavailable. Retrying in", timeout=10_000)
        shot(page, "07-database-unavailable")
        # It keeps retrying: a later attempt shows up as another request.
        with page.expect_request(re.compile(r"/conversations\?limit="), timeout=15_000):
            pass
        context.close()


def test_long_conversations_page_and_the_list_loads_more_on_scroll(page: Page, live: str, store: Store) -> None:
    from conversations.models import NewMessage

    for n in range(45):
        store.create_conversation(conversation_id=f"c{n:02d}", title=f"Conversation {n:02d}")
    store.append_messages("c00", [NewMessage("user", f"message {i}") for i in range(120)])
    page.goto(live)
    enter_token(page)
    sidebar = page.get_by_role("list", name="Recent conversations")
    expect(sidebar.get_by_role("button").first).to_contain_text("Conversation 00")
    page.locator("#list-sentinel").scroll_into_view_if_needed()
    expect(sidebar.get_by_role("button")).to_have_count(45)
    sidebar.get_by_role("button", name=re.compile("Conversation 00")).click()
    messages = page.get_by_role("list", name="Messages")
    expect(messages.get_by_role("listitem")).to_have_count(50)
    expect(messages.get_by_role("listitem").last).to_contain_text("message 119")
    page.get_by_role("button", name="Load earlier messages").click()
    expect(messages.get_by_role("listitem")).to_have_count(100)
    page.get_by_role("button", name="Load earlier messages").click()
    expect(messages.get_by_role("listitem")).to_have_count(120)
    expect(messages.get_by_role("listitem").first).to_contain_text("message 0")
    expect(page.get_by_role("button", name="Load earlier messages")).to_be_hidden()


def test_keyboard_only_and_narrow_screen(browser: Browser, live: str, store: Store) -> None:
    store.create_conversation(conversation_id="k1", title="Keyboard conversation")
    context = browser.new_context(viewport={"width": 390, "height": 760})
    page = context.new_page()
    page.goto(live)
    enter_token(page)
    toggle = page.get_by_role("button", name="Conversations", exact=True)
    expect(toggle).to_be_visible()
    item = page.get_by_role("button", name=re.compile("Keyboard conversation"))
    item.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Keyboard conversation")).to_be_focused()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    page.get_by_label("Message", exact=True).focus()
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Enter")
    expect(page.get_by_role("list", name="Messages").get_by_role("listitem")).to_have_count(1)
    shot(page, "08-narrow")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    context.close()


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (422, {"error": "search_timeout", "message": "the search took longer than 2000 ms and was stopped"}, "stopped"),
        (503, {"error": "database_unavailable", "message": "the database is unavailable"}, "Search again"),
    ],
)
def test_a_failed_search_says_why_and_is_not_retried(
    page: Page, live: str, status: int, body: dict[str, Any], shown: str
) -> None:
    page.goto(live)
    # The sidebar's first load is done before the search: its success, landing after the search's
    # 503, would take the banner down (any answer from the database does) before it is seen.
    with page.expect_response(lambda response: "/conversations?" in response.url):
        enter_token(page)
    searches = []

    def answer(route: Route) -> None:
        searches.append(route.request.url)
        route.fulfill(status=status, json=body, headers={"Retry-After": "1"})

    page.route(re.compile(r"/search\?"), answer)
    page.get_by_label("Search messages").fill("the")
    page.get_by_label("Search messages").press("Enter")
    expect(page.locator("#search-list li, [role=alert]").filter(has_text=shown).first).to_be_visible()
    page.wait_for_timeout(2500)  # longer than Retry-After: a retry would have happened by now
    assert len(searches) == 1
