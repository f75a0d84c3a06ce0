#!/usr/bin/env python3
"""Test texts for scripts/tokenizer-check/run.sh: the shared reference texts, hand-picked edge cases (special
tokens, scripts, whitespace, code, numbers) and seeded random strings.

usage: gen_texts.py OUT_DIR [N_RANDOM] [SEED]  -> OUT_DIR/texts.bin (texts joined by \x1e), OUT_DIR/texts.json
"""
import json, os, random, sys

out, n_random, seed = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 600, int(sys.argv[3]) if len(sys.argv) > 3 else 11
random.seed(seed)
ref = os.path.join(os.path.dirname(__file__), "../../../shared/reference/smollm2_tokenize.jsonl")
texts = [json.loads(l)["text"] for l in open(ref)] if os.path.exists(ref) else []
texts += [
 "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
 "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n", "<bos><start_of_turn>user\nhi<end_of_turn>",
 "<|im_start|><|im_start|>", "<|im_start", "<|im_start|> user", " <|im_end|> ", "<|endoftext|>x<|endoftext|>", "<end_of_turn><eos>", "<unk>", "<mask>", "<pad>",
 "[multimodal]", "<start_of_image>", "<image_soft_token>", "a<unused5>b", "<|im_end|>\n\n\n", "text<|im_end|>\n<|im_start|>", "<fim_prefix>x<fim_suffix>y<fim_middle>", "<reponame>r<file_sep>f",
 "Hello\r\nWorld\r\n", "a\u00a0b\u3000c\u2003d", "  \n  \n", "\t\t\tindented", "x \n y", "trailing\n", "\n", "\r", "\r\n\r\n",
 "DON'T I'LL WE'RE YOU'VE SHE'D IT'S I'M", "it’s don’t", "'s 't 're", "''''", "''s", "rock 'n' roll",
 "中文字符测试，这是一个句子。", "日本語のテキストです。カタカナ、ひらがな。", "한국어 문장입니다.", "Привет, как дела?", "Γειά σου Κόσμε", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก",
 "Ünïcödé ñ ç ß ø å", "naïve café résumé", "ﬁ ﬂ ligatures", "x² + y³ = z⁴, ½ ¼ Ⅻ", "١٢٣٤٥ ٦٧٨", "１２３ ＡＢＣ ａｂｃ",
 "😀😃😄😁😆 🇺🇸🇫🇷 👩‍💻 ✨🔥", "e\u0301 a\u0308 n\u0303", "\u200b\u200c\u200d\ufeff", "\x00\x01\x07\x1b[31mred\x1b[0m",
 "def foo(bar):\n\treturn bar ** 2  # comment\n", "if (a && b || !c) { x += 1; }", "SELECT * FROM t WHERE id=42;", "<div class=\"a\"><p>Hi</p></div>", "**bold** _it_ `code` # H1\n- item",
 "https://www.example.com/a/b?c=d&e=f#g", "foo@bar.baz", "1,234,567.89", "3.14159265358979323846", "123456789012345678901234567890", "$100 €50 £20 ¥1000", "10:30am 2024-01-15",
 "!!!???...,,,;;;", "....", "---", "___", "a-b_c.d/e\\f", "(((nested)))", "[[a]]{{b}}",
 "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis", "a" * 300, " " * 40 + "x", "\n" * 40, "ab " * 50,
 "The quick brown fox jumps over the lazy dog. " * 5, "HelloWorld helloWORLD Hello_World", "iPhone eBay McDonald's O'Reilly",
 "▁", "▁▁hello", "hello▁world", "> </", "a> </b", "<0x41>", "Ġhello", "Ċ",
]
def rnd():
    pools = [(0x20,0x7E)]*4 + [(0x09,0x0D),(0x00,0x1F),(0xA0,0x17F),(0x370,0x3FF),(0x400,0x4FF),(0x300,0x36F),(0x4E00,0x9FFF),(0xAC00,0xD7A3),(0x3040,0x30FF),(0x1F300,0x1FAFF),(0x2000,0x206F),(0x3000,0x303F),(0xE000,0xE0FF),(0x0600,0x06FF),(0x0900,0x097F),(0xFF00,0xFFEF)]
    words = ["<|im_start|>","<|im_end|>","<start_of_turn>","<end_of_turn>","<eos>","<bos>"," the","'s","'LL","\n\n","  ","123","    ","\t\t"]
    s=""
    for _ in range(random.randint(1,30)):
        if random.random()<0.15: s+=random.choice(words); continue
        a,b=random.choice(pools); c=chr(random.randint(a,b))
        if 0xD800<=ord(c)<=0xDFFF: continue
        s+=c
    return s
texts += [rnd() for _ in range(n_random)]
texts = [t for t in texts if "\x1e" not in t]
open(os.path.join(out, "texts.bin"), "wb").write("\x1e".join(texts).encode())
json.dump(texts, open(os.path.join(out, "texts.json"), "w"))
print(len(texts))
