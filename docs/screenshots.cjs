// Take the README pictures from a running Dagster UI with headless Chromium (playwright-core).
// Usage: node docs/screenshots.cjs <ui-url> <output-dir>   (docs/screenshots.sh does everything)
// Env: PLAYWRIGHT_DIR (where playwright-core is installed), CHROMIUM (default /usr/bin/chromium).
const path = require("path");
const { chromium } = require(path.join(process.env.PLAYWRIGHT_DIR, "node_modules", "playwright-core"));

const [url, outDir] = process.argv.slice(2);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });

    // 1. The asset graph of the group, with each asset's latest materialization and checks.
    await page.goto(`${url}/asset-groups/hipages_events`, { waitUntil: "networkidle" });
    await page.locator('text="hourly_activity_csv" >> visible=true').first().waitFor();
    await page.waitForTimeout(1500); // edges and status badges settle
    await page.screenshot({ path: path.join(outDir, "asset_graph.png") });

    // 2. An asset's metadata plots: one point per materialization (rows, distinct_urls: what
    //    cleaned_events records; see clean/assets.py and io_manager.py).
    await page.goto(`${url}/assets/cleaned_events?view=overview`, { waitUntil: "networkidle" });
    await page.getByText("Columns", { exact: true }).first().click(); // fold the column table
    await page.getByRole("button", { name: "Plots" }).click();
    // "Events" plots every materialization; "Partitions" plots the latest 120 hours, which for
    // the 2017 sample are empty.
    await page.getByRole("button", { name: "Events" }).click();
    await page.getByText("distinct_urls").first().waitFor();
    await page.waitForLoadState("networkidle");
    await page.waitForTimeout(1500);
    await page.getByText("Metadata", { exact: true }).first().evaluate((el) => el.scrollIntoView({ block: "start" }));
    await page.screenshot({ path: path.join(outDir, "asset_plots.png") });

    // 3. A check's result for every hour (checks of hourly assets are partitioned): the WARN that
    //    `make run` prints for 2017-02-02 20:00 is on that hour.
    await page.goto(`${url}/assets/cleaned_events?view=checks`, { waitUntil: "networkidle" });
    await page.getByText("url_level1_expected").first().click();
    await page.waitForLoadState("networkidle");
    await page.getByText("Partitions", { exact: true }).last().click();
    await page.waitForLoadState("networkidle");
    await page.getByText("Missing", { exact: false }).first().click({ timeout: 120000 }); // list only the checked hours
    await page.waitForLoadState("networkidle");
    await page.waitForTimeout(2500);
    await page.screenshot({ path: path.join(outDir, "asset_checks.png"), timeout: 120000 });
  } finally {
    await browser.close();
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
