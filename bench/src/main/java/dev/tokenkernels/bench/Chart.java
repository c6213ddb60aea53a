package dev.tokenkernels.bench;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import javax.imageio.ImageIO;

/** A horizontal bar chart of each report row's throughput as a fraction of its bandwidth probe. */
final class Chart {
    private static final int WIDTH = 900;
    private static final int BAR = 22;
    private static final int LEFT = 330;

    private Chart() {
    }

    static void write(List<Report.Row> rows, Path file) throws IOException {
        System.setProperty("java.awt.headless", "true");
        int height = 85 + rows.size() * (BAR + 8);
        BufferedImage image = new BufferedImage(WIDTH, height, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = image.createGraphics();
        try {
            g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
            g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
            g.setColor(Color.WHITE);
            g.fillRect(0, 0, WIDTH, height);
            g.setColor(Color.BLACK);
            g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 14));
            g.drawString("Throughput as a fraction of the read-bandwidth probe swept before each run", 10, 22);
            g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
            int scaleWidth = WIDTH - LEFT - 90;
            int y = 45;
            for (Report.Row r : rows) {
                double fraction = Math.max(0, Math.min(1, r.fractionOfProbe()));
                g.setColor(Color.DARK_GRAY);
                g.drawString(r.op() + " " + Report.label(r) + " " + r.shape() + " " + r.dtype(), 10, y + 15);
                g.setColor(r.threads() == 1 ? new Color(0x4C72B0) : new Color(0xDD8452));
                g.fillRect(LEFT, y, (int) (fraction * scaleWidth), BAR);
                g.setColor(Color.BLACK);
                g.drawString(String.format(Locale.ROOT, "%.0f%%  %.1f GB/s", 100 * r.fractionOfProbe(),
                        r.gbPerSecond()), LEFT + (int) (fraction * scaleWidth) + 6, y + 15);
                y += BAR + 8;
            }
            g.setColor(Color.GRAY);
            g.setStroke(new BasicStroke(1f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER, 1f, new float[] {4f}, 0f));
            g.drawLine(LEFT + scaleWidth, 35, LEFT + scaleWidth, height - 10);
            g.drawString("probe", LEFT + scaleWidth + 4, 45);
            g.setColor(new Color(0x4C72B0));
            g.drawString("1 thread (vs the 1-thread probe)", LEFT, height - 8);
            g.setColor(new Color(0xDD8452));
            g.drawString("all threads (vs the all-thread probe)", LEFT + 220, height - 8);
        } finally {
            g.dispose();
        }
        ImageIO.write(image, "png", file.toFile());
    }
}
