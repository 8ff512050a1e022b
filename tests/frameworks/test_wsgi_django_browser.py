"""A real browser in the Django admin, served by clusterserve in each dispatch mode.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium at /usr/bin/chromedriver: Selenium Manager would try to download a
driver, and there is no network for it) logs in, adds a product, and logs
out, loading the admin's CSS and JavaScript along the way. Skipped, with the
reason, only where Chromium or its driver is not installed; .ci/run installs both.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.frameworks.django_project import ADMIN_PASSWORD, ADMIN_USER
from tests.frameworks.servers import base_url, no_new_faults, serve

pytestmark = [pytest.mark.timeout(180), pytest.mark.http_path]

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if CHROMIUM is None or not CHROMEDRIVER.exists():
    pytest.skip("Debian's chromium and chromium-driver are not installed "
                "(apt-get install chromium chromium-driver; .ci/run does)", allow_module_level=True)

WAIT = 30


@pytest.fixture(scope="module")
def site(dispatch, django_project):
    with serve(dispatch, django_project.wsgi_app, cwd=django_project.root, ready_path="/admin/") as server:
        yield server


@pytest.fixture
def chromium(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def test_browser_logs_in_adds_a_product_and_logs_out(chromium, site, django_project):
    wait = WebDriverWait(chromium, WAIT)
    name = f"Browser widget {uuid.uuid4().hex[:8]}"
    with no_new_faults(site):
        chromium.get(base_url(site) + "/admin/")
        wait.until(expected_conditions.title_contains("Log in"))
        chromium.find_element(By.ID, "id_username").send_keys(ADMIN_USER)
        chromium.find_element(By.ID, "id_password").send_keys(ADMIN_PASSWORD)
        chromium.find_element(By.CSS_SELECTOR, "#login-form input[type=submit]").click()
        wait.until(expected_conditions.title_contains("Site administration"))
        # The admin's stylesheets came from the same server (DEBUG's static files view).
        rules = chromium.execute_script(
            "return Array.from(document.styleSheets).reduce((n, s) => n + s.cssRules.length, 0)")
        assert rules > 100

        chromium.find_element(By.CSS_SELECTOR, "a[href='/admin/shop/product/add/']").click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "id_name"))).send_keys(name)
        chromium.find_element(By.ID, "id_price").send_keys("19.99")
        chromium.find_element(By.CSS_SELECTOR, "input[name=_save]").click()
        message = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
        assert "was added successfully" in message.text and name in message.text

        chromium.find_element(By.CSS_SELECTOR, "#logout-form button[type=submit]").click()
        wait.until(expected_conditions.title_contains("Logged out"))
        assert chromium.get_cookie("sessionid") is None

    with sqlite3.connect(django_project.root / "db.sqlite3") as db:
        saved = db.execute("SELECT price FROM shop_product WHERE name = ?", (name,)).fetchall()
    assert saved == [(19.99,)]
