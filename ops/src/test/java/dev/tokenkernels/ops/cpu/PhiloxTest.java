package dev.tokenkernels.ops.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class PhiloxTest {

    /**
     * The three Philox4x32-10 known answers of the Random123 distribution's {@code examples/kat_vectors}
     * (Salmon et al., SC 2011): counter words, key words, expected output words.
     */
    private static final int[][] KNOWN_ANSWERS = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {-1, -1, -1, -1, -1, -1, 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
            0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };

    @Test
    void scalarMatchesTheKnownAnswers() {
        for (int[] kat : KNOWN_ANSWERS) {
            int[] out = new int[4];
            Philox.block(kat[0], kat[1], kat[2], kat[3], kat[4], kat[5], out);
            assertArrayEquals(new int[] {kat[6], kat[7], kat[8], kat[9]}, out);
        }
    }

    @Test
    void vectorLanesMatchTheKnownAnswersAndTheScalarBlocks() {
        int lanes = Philox.LANES;
        int[] out = new int[4 * lanes];
        for (int[] kat : KNOWN_ANSWERS) { // lane 0 carries the known counter
            Philox.blocks(kat[0], kat[1], kat[2], kat[3], kat[4], kat[5], out);
            for (int w = 0; w < 4; w++) {
                assertEquals(kat[6 + w], out[w * lanes], "word " + w);
            }
        }
        SplittableRandom random = new SplittableRandom(3);
        int[] one = new int[4];
        for (int trial = 0; trial < 2000; trial++) {
            int first = trial < 10 ? -lanes / 2 - trial : random.nextInt(); // wraps through 2^32
            int c1 = random.nextInt();
            int c2 = random.nextInt();
            int c3 = random.nextInt();
            int k0 = random.nextInt();
            int k1 = random.nextInt();
            Philox.blocks(first, c1, c2, c3, k0, k1, out);
            for (int j = 0; j < lanes; j++) {
                Philox.block(first + j, c1, c2, c3, k0, k1, one);
                for (int w = 0; w < 4; w++) {
                    assertEquals(one[w], out[w * lanes + j], "trial " + trial + " lane " + j + " word " + w);
                }
            }
        }
    }

    @Test
    void uniformsAreOddMultiplesOfTwoToTheMinus24InsideZeroOne() {
        assertEquals(0x1p-24f, Philox.uniform(0));
        assertEquals(1f - 0x1p-24f, Philox.uniform(-1));
        assertEquals(0.5f + 0x1p-24f, Philox.uniform(0x80000000));
        assertEquals(0x1p-24f, Philox.uniform(0x1ff)); // the low 9 bits are not used
    }
}
