"""Label Studio's UI in headless Chromium, through the test's proxy: log in,
press the storage's "Sync Storage" button, then open the project's Data
Manager and wait for a task's text; screenshots are kept.

    sync_button.py BASE PROJECT TEXT SCREENSHOT_DIR

Prints one JSON line: the sync request's status and the screenshots.
"""

import json
import sys

from playwright.sync_api import sync_playwright

# As this machine needs them: no sandbox as root, nothing that calls out.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    base, project, text, shots = sys.argv[1:5]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(f"{base}/user/login/")
        page.fill("input[name=email]", "admin@example.com")
        page.fill("input[name=password]", "Passw0rd!")
        with page.expect_navigation():
            page.press("input[name=password]", "Enter")

        page.goto(f"{base}/projects/{project}/settings/storage")
        button = page.get_by_role("button", name="Sync Storage").first
        button.wait_for()
        with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.rstrip("/").endswith("/sync")
        ) as answer:
            button.click()
        sync = answer.value
        page.screenshot(path=f"{shots}/storage-settings.png", full_page=True)

        page.goto(f"{base}/projects/{project}/data")
        page.get_by_text(text).first.wait_for()
        page.screenshot(path=f"{shots}/data-manager.png", full_page=True)
        browser.close()
    print(
        json.dumps(
            {
                "sync_status": sync.status,
                "sync_url": sync.url,
                "screenshots": [f"{shots}/storage-settings.png", f"{shots}/data-manager.png"],
            }
        )
    )


if __name__ == "__main__":
    main()
